"""API tokens: stored only as a hash, shown once on the settings page, revoked by their owner."""

import pytest

from accounts.models import ApiToken
from accounts.services import TokenError, api_token_create, user_for_api_token

pytestmark = pytest.mark.django_db


def test_only_a_hash_of_the_token_is_stored(alice):
    token, raw_token = api_token_create(user=alice, name="support bot")
    stored = ApiToken.objects.filter(pk=token.pk).values().get()
    assert stored["digest"] != raw_token
    assert all(raw_token not in str(value) for value in stored.values())
    assert raw_token.startswith(stored["prefix"]) and len(stored["prefix"]) < len(raw_token)


def test_a_token_authenticates_its_user_and_nothing_else_does(alice, bob):
    _, alices_raw_token = api_token_create(user=alice, name="alice's app")
    _, bobs_raw_token = api_token_create(user=bob, name="bob's app")
    assert user_for_api_token(alices_raw_token) == alice
    assert user_for_api_token(bobs_raw_token) == bob
    assert user_for_api_token(alices_raw_token[:-1]) is None
    assert user_for_api_token(ApiToken.objects.get(user=alice).digest) is None  # the hash is not a token
    assert user_for_api_token("") is None


def test_every_token_is_different(alice):
    raw_tokens = {api_token_create(user=alice, name=f"app {n}")[1] for n in range(5)}
    assert len(raw_tokens) == 5


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_it_refuses_a_token_without_a_sensible_name(alice, name):
    with pytest.raises(TokenError):
        api_token_create(user=alice, name=name)
    assert not ApiToken.objects.exists()


def test_the_settings_page_creates_a_token_and_shows_it_once(client, alice):
    client.force_login(alice)
    response = client.post("/accounts/settings/tokens/", {"name": "support bot"})
    assert response.status_code == 200
    raw_token = response.context["new_token"]
    assert raw_token in response.content.decode()
    assert user_for_api_token(raw_token) == alice
    assert ApiToken.objects.get(user=alice).name == "support bot"

    settings_page = client.get("/accounts/settings/")
    assert settings_page.status_code == 200
    page = settings_page.content.decode()
    assert "support bot" in page and ApiToken.objects.get(user=alice).prefix in page
    assert raw_token not in page


def test_the_settings_page_explains_a_refused_name(client, alice):
    client.force_login(alice)
    response = client.post("/accounts/settings/tokens/", {"name": "  "})
    assert "Give the token a name" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_the_settings_page_lists_only_my_tokens(client, alice, bob):
    api_token_create(user=alice, name="alice's secret app")
    client.force_login(bob)
    response = client.get("/accounts/settings/")
    assert list(response.context["api_tokens"]) == []
    assert "secret app" not in response.content.decode()


def test_the_owner_revokes_a_token_and_it_stops_working(client, alice):
    token, raw_token = api_token_create(user=alice, name="support bot")
    client.force_login(alice)
    response = client.post(f"/accounts/settings/tokens/{token.pk}/revoke/")
    assert response.status_code == 200
    token.refresh_from_db()
    assert token.revoked_at is not None and not token.active
    assert user_for_api_token(raw_token) is None
    assert "revoked" in response.content.decode()


def test_someone_else_revoking_my_token_changes_nothing(client, alice, bob):
    token, raw_token = api_token_create(user=alice, name="support bot")
    client.force_login(bob)
    client.post(f"/accounts/settings/tokens/{token.pk}/revoke/")
    token.refresh_from_db()
    assert token.revoked_at is None
    assert user_for_api_token(raw_token) == alice


def test_revoking_only_takes_a_post(client, alice):
    token, raw_token = api_token_create(user=alice, name="support bot")
    client.force_login(alice)
    assert client.get(f"/accounts/settings/tokens/{token.pk}/revoke/").status_code == 405
    assert user_for_api_token(raw_token) == alice


def test_the_settings_pages_require_login(client, alice):
    token, _ = api_token_create(user=alice, name="support bot")
    for method, url in [
        ("get", "/accounts/settings/"),
        ("post", "/accounts/settings/tokens/"),
        ("post", f"/accounts/settings/tokens/{token.pk}/revoke/"),
    ]:
        response = getattr(client, method)(url, {"name": "sneaky"})
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
    assert ApiToken.objects.count() == 1 and ApiToken.objects.get().revoked_at is None

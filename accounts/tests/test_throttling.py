"""Password guessing and bad API tokens are throttled; a team behind one address still logs in."""

import pytest
from axes.models import AccessAttempt

from accounts.services import api_token_create
from prompts import services

pytestmark = pytest.mark.django_db


def log_in(client, username, password, address="10.0.0.1"):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def test_twenty_wrong_passwords_lock_the_account_even_for_the_right_one(client, alice):
    answers = [log_in(client, "alice", f"wrong-{n}").status_code for n in range(20)]
    assert answers[:4] == [200] * 4 and set(answers[5:]) == {429}
    locked = log_in(client, "alice", "alice-password-1")
    assert locked.status_code == 429 and locked["Retry-After"] == str(15 * 60)
    page = locked.content.decode()
    assert "Too many failed logins" in page and "alice" in page and "15 minutes" in page
    assert "_auth_user_id" not in client.session


def test_the_lock_is_on_the_account_from_the_failing_address_only(client, alice, bob, admin_user):
    for n in range(10):
        log_in(client, "alice", f"wrong-{n}")
    assert log_in(client, "bob", "bob-password-1").status_code == 302  # same address, other account
    client.logout()
    # Five anonymous guesses at the admin's password do not lock the admin out elsewhere.
    for n in range(5):
        log_in(client, "admin", f"guess-{n}", address="10.6.6.6")
    assert log_in(client, "admin", "password", address="10.6.6.6").status_code == 429
    assert log_in(client, "admin", "password", address="10.0.0.3").status_code == 302
    client.logout()
    assert log_in(client, "alice", "alice-password-1", address="10.0.0.2").status_code == 302


def test_behind_one_nat_a_name_guesser_never_locks_out_a_colleague_with_the_right_password(client, alice):
    for n in range(25):
        log_in(client, f"user{n}", "guess", address="10.6.6.6")
    refused = log_in(client, "user99", "guess", address="10.6.6.6")
    assert refused.status_code == 429 and "only a right password logs in" in refused.content.decode()
    assert log_in(client, "alice", "alice-password-1", address="10.6.6.6").status_code == 302


def test_a_successful_login_clears_the_failures_so_typos_never_add_up(client, alice):
    for _ in range(3):
        log_in(client, "alice", "typo")
    assert log_in(client, "alice", "alice-password-1").status_code == 302
    client.logout()
    for _ in range(3):
        log_in(client, "alice", "typo")
    assert log_in(client, "alice", "alice-password-1").status_code == 302


def test_an_admin_unlocks_an_account(client, alice, admin_client):
    for n in range(6):
        log_in(client, "alice", f"wrong-{n}")
    assert log_in(client, "alice", "alice-password-1").status_code == 429
    attempt = AccessAttempt.objects.get(username="alice")
    assert admin_client.get("/admin/axes/accessattempt/").status_code == 200
    admin_client.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert log_in(client, "alice", "alice-password-1").status_code == 302


def test_repeated_bad_api_tokens_get_429_with_a_json_error_and_valid_tokens_go_through(client, alice):
    prompt = services.prompt_create(owner=alice, name="N", slug="n", version={"template": "{{ x }}"})
    _, good = api_token_create(user=alice, name="app")
    answers = [
        client.get(f"/api/prompts/{prompt.slug}/", HTTP_AUTHORIZATION=f"Bearer cps_bad{n}").status_code
        for n in range(25)
    ]
    assert answers[:20] == [401] * 20 and set(answers[20:]) == {429}
    throttled = client.get(f"/api/prompts/{prompt.slug}/", HTTP_AUTHORIZATION="Bearer cps_bad")
    assert throttled["Content-Type"] == "application/json" and "Too many" in throttled.json()["error"]
    assert throttled["Retry-After"] == "60"  # bad tokens are counted a minute at a time
    assert client.get(f"/api/prompts/{prompt.slug}/", HTTP_AUTHORIZATION=f"Bearer {good}").status_code == 200


def test_a_token_name_that_cannot_be_stored_is_refused(client, alice):
    client.force_login(alice)
    response = client.post("/accounts/settings/tokens/", {"name": "bot \x00"}, headers={"HX-Request": "true"})
    assert response.status_code == 400 and "NUL" in response["X-Studio-Error"]
    from accounts.services import TokenError

    with pytest.raises(TokenError, match="surrogate"):
        api_token_create(user=alice, name="bot \ud800")

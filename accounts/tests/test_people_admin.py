"""Settings → People, for staff: a new first password (shown once), deactivate (logged out
everywhere, tokens revoked, work kept), reactivate, remove (confirmed by typing the name; only
someone who made nothing the team keeps); every change is recorded and listed. Never oneself,
never the last staff member, a superuser only by a superuser; others get 403."""

import pytest
from django.contrib.auth import get_user_model

from accounts.models import PeopleChange
from accounts.services import api_token_create

pytestmark = pytest.mark.django_db


def logged_in(client_class, username, password):
    """A browser of its own, logged in through the login page."""
    browser = client_class()
    assert browser.post("/accounts/login/", {"username": username, "password": password}).status_code == 302
    return browser


def panel_password(response) -> str:
    return response.content.decode().split('<code class="token">')[1].split("</code>")[0]


def test_staff_set_a_new_first_password_shown_once_and_the_old_one_stops_working(client, carol, bob):
    bobs_browser = logged_in(type(client), "bob", "bob-password-1")
    client.force_login(carol)
    answer = client.post(f"/accounts/settings/people/{bob.pk}/password/")
    password = panel_password(answer)
    bob.refresh_from_db()
    assert answer.status_code == 200 and bob.check_password(password) and not bob.check_password("bob-password-1")
    assert password not in client.get("/accounts/settings/").content.decode()  # shown once
    assert bobs_browser.get("/accounts/settings/").status_code == 302  # his open session ended
    assert "carol set a new first password for bob" in client.get("/accounts/settings/").content.decode()


def test_deactivating_logs_the_person_out_everywhere_and_keeps_their_work(client, carol, bob):
    _, token = api_token_create(user=bob, name="laptop")
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    bobs_browser = logged_in(type(client), "bob", "bob-password-1")
    assert bobs_browser.get("/accounts/settings/").status_code == 200
    client.force_login(carol)
    assert client.post(f"/accounts/settings/people/{bob.pk}/active/", {}).status_code == 200
    bob.refresh_from_db()
    assert not bob.is_active
    assert bobs_browser.get("/accounts/settings/").status_code == 302  # to the login page
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert type(client)().post("/accounts/login/", {"username": "bob", "password": "bob-password-1"}).status_code == 200
    change = PeopleChange.objects.get(action="deactivated")
    assert (change.actor_name, change.person_name) == ("carol", "bob")
    assert change.detail == "ended 1 session, revoked 1 API token"
    client.post(f"/accounts/settings/people/{bob.pk}/active/", {"active": "on"})
    bob.refresh_from_db()
    assert bob.is_active and client.get("/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_removal_is_confirmed_by_typing_the_name_and_deletes_only_private_things(client, carol, bob):
    from chat.models import Conversation

    Conversation.objects.create(owner=bob, title="mine")
    client.force_login(carol)
    asked = client.get(f"/accounts/settings/people/{bob.pk}/remove/").content.decode()
    assert "deletes their account and 1 conversation" in asked and "Type <code>bob</code>" in asked
    unconfirmed = client.post(f"/accounts/settings/people/{bob.pk}/remove/", {"confirm": "Bob"})
    assert unconfirmed.status_code == 400 and "Type “bob” to confirm" in unconfirmed.content.decode()
    assert get_user_model().objects.filter(username="bob").exists()
    removed = client.post(f"/accounts/settings/people/{bob.pk}/remove/", {"confirm": "bob"})
    assert removed.status_code == 200 and "bob is removed (deleted 1 conversation)" in removed.content.decode()
    assert not get_user_model().objects.filter(username="bob").exists() and not Conversation.objects.exists()
    change = PeopleChange.objects.get(action="removed")
    assert change.person is None and change.person_name == "bob"  # the record outlives the account


def test_someone_who_made_team_work_is_deactivated_instead_of_removed(client, carol, alice):
    from prompts import services as prompt_services

    prompt_services.prompt_create(owner=alice, name="Mine", slug="mine", version={"template": "{{ q }}"})
    client.force_login(carol)
    asked = client.get(f"/accounts/settings/people/{alice.pk}/remove/").content.decode()
    assert "cannot be removed: they made work the team keeps (1 prompt, 1 prompt version" in asked
    refused = client.post(f"/accounts/settings/people/{alice.pk}/remove/", {"confirm": "alice"})
    assert refused.status_code == 400 and "deactivate them instead" in refused.content.decode()
    assert get_user_model().objects.filter(username="alice").exists()


def test_never_oneself_a_superuser_only_by_a_superuser_and_never_the_last_staff(client, carol, bob, django_user_model):
    from accounts import services

    client.force_login(carol)
    for action in ("password", "active", "remove"):
        refused = client.post(f"/accounts/settings/people/{carol.pk}/{action}/", {"confirm": "carol"})
        assert refused.status_code == 400 and "yourself" in refused.content.decode()
    root = django_user_model.objects.create_superuser("root", password="root-password-1")
    refused = client.post(f"/accounts/settings/people/{root.pk}/active/", {})
    assert refused.status_code == 400 and "Only a superuser" in refused.content.decode()
    root.refresh_from_db()
    assert root.is_active
    # Only carol and root are staff; root, a superuser, may deactivate carol, but not once she is the last.
    django_user_model.objects.filter(pk=root.pk).update(is_staff=False)
    root.refresh_from_db()
    root.is_staff = True  # acting as staff, though the database no longer counts them
    with pytest.raises(services.PeopleError, match="last staff member"):
        services.person_set_active(by=root, person=carol, active=False)
    carol.refresh_from_db()
    assert carol.is_active and carol.is_staff


def test_people_are_managed_by_staff_only_on_every_route(client, alice, bob):
    client.force_login(alice)
    for action, data in (
        ("password", {}),
        ("active", {}),
        ("remove", {"confirm": "bob"}),
        ("staff", {"is_staff": "on"}),
    ):
        assert client.post(f"/accounts/settings/people/{bob.pk}/{action}/", data).status_code == 403
    assert client.get(f"/accounts/settings/people/{bob.pk}/remove/").status_code == 403
    bob.refresh_from_db()
    assert bob.is_active and bob.check_password("bob-password-1") and not bob.is_staff
    assert not PeopleChange.objects.exists()


def test_adds_and_staff_changes_are_recorded_and_the_record_is_append_only(client, carol):
    client.force_login(carol)
    client.post("/accounts/settings/people/", {"username": "dave", "is_staff": "on"})
    dave = get_user_model().objects.get(username="dave")
    client.post(f"/accounts/settings/people/{dave.pk}/staff/", {})
    page = client.get("/accounts/settings/").content.decode()
    assert "carol added dave" in page and "carol took staff away from dave" in page
    assert [c.action for c in PeopleChange.objects.order_by("id")] == ["added", "staff_taken"]
    change = PeopleChange.objects.first()
    with pytest.raises(ValueError):
        change.save()
    with pytest.raises(ValueError):
        change.delete()

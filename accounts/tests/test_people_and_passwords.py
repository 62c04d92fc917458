"""Settings: anyone changes their password; staff add people and make someone staff, in the
studio's own pages (checked on the server: others get 403)."""

import pytest
from django.contrib.auth import get_user_model

pytestmark = pytest.mark.django_db


def test_a_person_changes_their_password_and_stays_logged_in(client, alice):
    client.force_login(alice)
    refused = client.post(
        "/accounts/settings/password/",
        {"old_password": "wrong", "new_password1": "n3w-passw0rd-x", "new_password2": "n3w-passw0rd-x"},
    )
    assert refused.status_code == 400 and "old password was entered incorrectly" in refused.content.decode()
    changed = client.post(
        "/accounts/settings/password/",
        {"old_password": "alice-password-1", "new_password1": "n3w-passw0rd-x", "new_password2": "n3w-passw0rd-x"},
    )
    assert changed.status_code == 200 and "Your password is changed" in changed.content.decode()
    assert client.get("/accounts/settings/").status_code == 200  # still logged in
    alice.refresh_from_db()
    assert alice.check_password("n3w-passw0rd-x")


def test_staff_add_a_person_who_logs_in_with_the_password_shown_once(client, carol):
    client.force_login(carol)
    page = client.get("/accounts/settings/").content.decode()
    assert "Add person" in page
    answer = client.post("/accounts/settings/people/", {"username": "dave", "email": "dave@example.com"})
    body = answer.content.decode()
    password = body.split('<code class="token">')[1].split("</code>")[0]
    dave = get_user_model().objects.get(username="dave")
    assert dave.check_password(password) and not dave.is_staff
    duplicate = client.post("/accounts/settings/people/", {"username": "DAVE"})
    assert duplicate.status_code == 400 and "already" in duplicate.content.decode()
    client.post(f"/accounts/settings/people/{dave.pk}/staff/", {"is_staff": "on"})
    dave.refresh_from_db()
    assert dave.is_staff
    refused = client.post(f"/accounts/settings/people/{carol.pk}/staff/", {})
    assert refused.status_code == 400 and "yourself" in refused.content.decode()


def test_people_are_managed_by_staff_only(client, alice, bob):
    client.force_login(alice)
    assert "Add person" not in client.get("/accounts/settings/").content.decode()
    assert client.post("/accounts/settings/people/", {"username": "eve"}).status_code == 403
    assert client.post(f"/accounts/settings/people/{bob.pk}/staff/", {"is_staff": "on"}).status_code == 403
    bob.refresh_from_db()
    assert not bob.is_staff and not get_user_model().objects.filter(username="eve").exists()

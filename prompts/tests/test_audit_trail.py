"""Nobody forges the record: label history is append-only everywhere, the admin cannot make a
prompt without a version, worker and message rows are read-only there."""

import pytest

from chat.models import ModelWorker
from chat.services import conversation_create
from prompts import services
from prompts.models import AppendOnlyError, LabelMove, Prompt

pytestmark = pytest.mark.django_db


@pytest.fixture
def moved(alice, notes):
    services.label_move(prompt=notes, name="production", version=notes.versions.get(number=1), user=alice)
    return LabelMove.objects.get(prompt=notes)


def test_a_recorded_label_move_never_changes_or_goes_alone(moved, bob):
    moved.moved_by = bob
    with pytest.raises(AppendOnlyError):
        moved.save()
    with pytest.raises(AppendOnlyError):
        moved.delete()
    with pytest.raises(AppendOnlyError):
        LabelMove.objects.filter(pk=moved.pk).update(moved_by=bob)
    with pytest.raises(AppendOnlyError):
        LabelMove.objects.filter(pk=moved.pk).delete()
    assert LabelMove.objects.get(pk=moved.pk).moved_by.username == "alice"


def test_deleting_the_whole_prompt_still_takes_its_history(moved, notes):
    notes.delete()
    assert not LabelMove.objects.exists()


def test_staff_cannot_add_change_or_delete_label_history_in_the_admin(admin_client, moved, bob):
    assert admin_client.get("/admin/prompts/labelmove/").status_code == 200  # they may read it
    assert admin_client.get("/admin/prompts/labelmove/add/").status_code == 403
    response = admin_client.post(f"/admin/prompts/labelmove/{moved.pk}/change/", {"label": "x", "moved_by": bob.pk})
    assert response.status_code == 403
    assert admin_client.post(f"/admin/prompts/labelmove/{moved.pk}/delete/", {"post": "yes"}).status_code == 403
    assert LabelMove.objects.get(pk=moved.pk).label == "production"


def test_the_admin_cannot_create_a_prompt_without_a_version(admin_client, alice):
    response = admin_client.post("/admin/prompts/prompt/add/", {"name": "Empty", "slug": "empty", "owner": alice.pk})
    assert response.status_code == 403 and not Prompt.objects.filter(slug="empty").exists()


def test_a_prompt_left_without_versions_answers_404_not_500(client, alice, bob):
    empty = Prompt.objects.create(name="Empty", slug="empty", owner=alice)  # as a hand-made row would be
    client.force_login(bob)
    for url in ("/prompts/empty/", "/prompts/empty/playground/", "/prompts/empty/diff/"):
        response = client.get(url)
        assert response.status_code == 404 and "no versions" in response.content.decode(), url
    assert empty.pk


def test_worker_and_message_rows_are_read_only_in_the_admin(admin_client, alice):
    from django.utils import timezone

    worker = ModelWorker.objects.create(
        channel_name="w!1", hostname="gpu-1", pid=1, state="ready", last_seen_at=timezone.now()
    )
    assert admin_client.get("/admin/chat/modelworker/").status_code == 200
    assert admin_client.get("/admin/chat/modelworker/add/").status_code == 403
    assert admin_client.post(f"/admin/chat/modelworker/{worker.pk}/change/", {"state": "failed"}).status_code == 403
    conversation = conversation_create(owner=alice, title="Alice's")
    page = admin_client.get(f"/admin/chat/conversation/{conversation.pk}/change/").content.decode()
    assert 'name="messages-MAX_NUM_FORMS" value="0"' in page  # no message can be added by hand


def test_staff_cannot_add_api_tokens_for_someone_in_the_admin(admin_client):
    assert admin_client.get("/admin/accounts/apitoken/add/").status_code == 403

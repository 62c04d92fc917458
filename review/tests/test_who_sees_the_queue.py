"""A prompt's traffic is reviewed by its owner, its editors and staff. Anyone else never sees it:
their list leaves it out, an item is a 404, a prompt they may see but not review a 403."""

import pytest

from review.models import ReviewItem
from review.services import item_add

from .conftest import live_reply

pytestmark = pytest.mark.django_db


@pytest.fixture
def item(reply):
    return item_add(message_id=reply.pk, reason=ReviewItem.Reason.THUMBS_DOWN)


@pytest.mark.parametrize("username", ["alice", "dave", "carol"])
def test_the_owner_an_editor_and_staff_see_the_item(api, item, username):
    listed = api(username).get("/api/review-queue/?prompt=support")
    assert listed.status_code == 200 and [entry["id"] for entry in listed.json()["items"]] == [item.pk]
    assert [entry["id"] for entry in api(username).get("/api/review-queue/").json()["items"]] == [item.pk]


def test_another_user_never_sees_the_traffic(api, item, reply, bob):
    bobs = api("bob")  # bob sent the request himself, but the prompt is alice's: its review is hers
    assert bobs.get("/api/review-queue/").json() == {"items": [], "next": None}
    refused = bobs.get("/api/review-queue/?prompt=support")
    assert refused.status_code == 403 and "owner, the editors and staff" in refused.json()["error"]
    assert bobs.get("/api/review-queue/?prompt=no-such-prompt").status_code == 404
    for path, body in (
        (f"/api/review-queue/{item.pk}/", {"expected": "x"}),
        (f"/api/review-queue/{item.pk}/", {"verdict": "fine"}),
        (f"/api/review-queue/{item.pk}/claim/", {}),
        (f"/api/review-queue/{item.pk}/assign/", {"user": "bob"}),
        ("/api/review-queue/", {"message": reply.pk}),
    ):
        answer = bobs.post(path, body)
        assert answer.status_code == 404, (path, answer.json())
    assert bobs.get("/api/review-queue/agreement/?prompt=support").status_code == 403
    assert ReviewItem.objects.get().status == "open"


def test_an_item_is_not_assigned_to_someone_who_may_not_review_it(api, item):
    refused = api("alice").post(f"/api/review-queue/{item.pk}/assign/", {"user": "bob"})
    assert refused.status_code == 400 and "bob may not review “support”" in refused.json()["error"]
    assert api("alice").post(f"/api/review-queue/{item.pk}/assign/", {"user": "nobody"}).status_code == 400
    assigned = api("alice").post(f"/api/review-queue/{item.pk}/assign/", {"user": "dave"})
    assert assigned.status_code == 200 and assigned.json() == {"id": item.pk, "assigned_to": "dave"}
    assert api("alice").get("/api/review-queue/?prompt=support").json()["items"][0]["assigned_to"] == "dave"
    assert api("alice").post(f"/api/review-queue/{item.pk}/assign/", {"user": None}).json()["assigned_to"] is None


def test_the_pages_follow_the_same_rule(client, item, bob, alice):
    client.force_login(bob)
    assert client.get("/review/?prompt=support").status_code == 403
    assert client.get("/review/?prompt=no-such-prompt").status_code == 404
    assert client.get(f"/review/{item.pk}/", HTTP_HX_REQUEST="true").status_code == 404
    assert client.post(f"/review/{item.pk}/review/", {"verdict": "fine"}).status_code == 404
    assert client.post("/review/pick/", {"message": item.message_id}).status_code == 404
    assert "support" not in client.get("/review/").content.decode()
    client.force_login(alice)
    assert client.get("/review/?prompt=support").status_code == 200


def test_a_picked_reply_must_be_a_finished_reply_of_a_prompt_the_person_reviews(api, support_version, bob):
    others = live_reply(support_version, owner=bob)
    assert api("alice").post("/api/review-queue/", {"message": others.pk}).status_code == 201
    question = others.parent
    assert api("alice").post("/api/review-queue/", {"message": question.pk}).status_code == 404  # not a reply
    assert api("alice").post("/api/review-queue/", {"message": "x"}).status_code == 400
    assert api("alice").post("/api/review-queue/", {"message": True}).status_code == 400

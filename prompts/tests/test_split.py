"""A/B splits through the API: a prompt's `prompt:<slug>` traffic split between labels by weight
(`/api/prompts/<slug>/split/`), ended, and promoted; what it refuses and whom.

alice owns "meeting-notes" (v1 production, v2 candidate), bob is another user, carol is staff."""

import json

import pytest
from django.test import Client

from accounts.services import api_token_create
from prompts import services
from prompts.models import LabelMove, PromptSplit

pytestmark = pytest.mark.django_db

SPLIT = {"variants": [{"label": "production", "weight": 0.9}, {"label": "candidate", "weight": 0.1}]}


@pytest.fixture
def labelled(notes, alice):
    """alice's "meeting-notes": production → v1, candidate → v2."""
    services.label_move(prompt=notes, name="production", version=notes.versions.get(number=1), user=alice)
    services.label_move(prompt=notes, name="candidate", version=notes.versions.get(number=2), user=alice)
    return notes


def api(user, method, path, body=None):
    token = api_token_create(user=user, name="sdk")[1]
    answer = getattr(Client(), method)(
        path,
        json.dumps(body) if body is not None else "",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    return answer.status_code, answer.json()


def test_it_starts_a_split_and_answers_it(alice, labelled):
    status, split = api(alice, "post", "/api/prompts/meeting-notes/split/", SPLIT)
    assert status == 201, split
    assert split["variants"] == [
        {"label": "production", "weight": 0.9, "version": 1},
        {"label": "candidate", "weight": 0.1, "version": 2},
    ]
    assert split["running"] is True and split["created_by"] == "alice" and split["ended_at"] is None
    status, shown = api(alice, "get", "/api/prompts/meeting-notes/split/")
    assert status == 200 and shown["id"] == split["id"] and shown["variants"] == split["variants"]
    assert "comparison" in shown  # the owner sees the variants' traffic side by side


def test_without_a_split_it_answers_no_variants(alice, labelled):
    assert api(alice, "get", "/api/prompts/meeting-notes/split/") == (200, {"variants": None})


def test_a_new_split_ends_the_running_one(alice, labelled):
    first = api(alice, "post", "/api/prompts/meeting-notes/split/", SPLIT)[1]
    halves = {"variants": [{"label": "production", "weight": 0.5}, {"label": "candidate", "weight": 0.5}]}
    second = api(alice, "post", "/api/prompts/meeting-notes/split/", halves)[1]
    assert second["id"] != first["id"]
    assert PromptSplit.objects.get(pk=first["id"]).ended_at is not None
    assert list(PromptSplit.objects.filter(ended_at=None).values_list("pk", flat=True)) == [second["id"]]


def test_delete_ends_the_split(alice, labelled):
    api(alice, "post", "/api/prompts/meeting-notes/split/", SPLIT)
    status, ended = api(alice, "delete", "/api/prompts/meeting-notes/split/")
    assert status == 200 and ended["running"] is False and ended["ended_at"]
    assert api(alice, "get", "/api/prompts/meeting-notes/split/") == (200, {"variants": None})
    status, refused = api(alice, "delete", "/api/prompts/meeting-notes/split/")
    assert status == 404 and "no split running" in refused["error"]


def test_promote_moves_production_to_the_variants_version_and_ends_the_split(alice, labelled):
    split = api(alice, "post", "/api/prompts/meeting-notes/split/", SPLIT)[1]
    status, promoted = api(alice, "post", "/api/prompts/meeting-notes/split/promote/", {"label": "candidate"})
    assert status == 200, promoted
    assert promoted["promoted"] == "candidate" and promoted["production"] == 2
    assert promoted["split"]["running"] is False and promoted["split"]["promoted"] == "candidate"
    assert labelled.labels.get(name="production").version.number == 2
    move = LabelMove.objects.filter(prompt=labelled, label="production").first()  # the newest first
    assert (move.from_number, move.to_number, move.moved_by.username) == (1, 2, "alice")
    assert PromptSplit.objects.get(pk=split["id"]).ended_at is not None
    assert api(alice, "get", "/api/prompts/meeting-notes/split/") == (200, {"variants": None})
    status, again = api(alice, "post", "/api/prompts/meeting-notes/split/promote/", {"label": "candidate"})
    assert status == 404 and "no split running" in again["error"]


def test_promoting_the_control_only_ends_the_split(alice, labelled):
    api(alice, "post", "/api/prompts/meeting-notes/split/", SPLIT)
    moves = LabelMove.objects.count()
    status, promoted = api(alice, "post", "/api/prompts/meeting-notes/split/promote/", {"label": "production"})
    assert status == 200 and promoted["production"] == 1
    assert LabelMove.objects.count() == moves  # nothing moved, nothing to record
    assert not PromptSplit.objects.filter(ended_at=None).exists()


def test_it_promotes_only_a_variant_of_the_split(alice, labelled):
    services.label_move(prompt=labelled, name="staging", version=labelled.versions.get(number=2), user=alice)
    api(alice, "post", "/api/prompts/meeting-notes/split/", SPLIT)
    status, refused = api(alice, "post", "/api/prompts/meeting-notes/split/promote/", {"label": "staging"})
    assert status == 400 and refused["error"].startswith("label: must be one of the split's variants")
    assert PromptSplit.objects.filter(ended_at=None).exists()


@pytest.mark.parametrize(
    "variants, field, words",
    [
        (
            [{"label": "production", "weight": 0.9}, {"label": "candidate", "weight": 0.2}],
            "variants",
            "the weights add up to 1.1; they must add up to 1",
        ),
        (
            [{"label": "production", "weight": 0.5}, {"label": "candidat", "weight": 0.5}],
            "variants[1].label",
            "“candidat” is not a label of this prompt (its labels: candidate, production)",
        ),
        (
            [{"label": "production", "weight": 1.0}, {"label": "candidate", "weight": 0}],
            "variants[1].weight",
            "must be a number above 0",
        ),
        (
            [{"label": "production", "weight": True}, {"label": "candidate", "weight": 0.5}],
            "variants[0].weight",
            "must be a number above 0",
        ),
        (
            [{"label": "production", "weight": 0.5}, {"label": "production", "weight": 0.5}],
            "variants[1].label",
            "names “production” a second time",
        ),
        ([{"label": "production", "weight": 1}], "variants", "a split needs two variants at least"),
        ([{"label": "latest", "weight": 1}], "variants[0].label", "“latest” moves with every new version"),
        ([{"label": "production", "weight": 0.1}] * 11, "variants", "holds 11 variants; a split has at most 10"),
        ("production", "variants", "must be a list of labels with weights"),
        ([{"label": "production", "share": 0.5}], "variants[0]", 'must be an object {"label": ..., "weight": ...}'),
    ],
)
def test_it_refuses_bad_variants_naming_the_field(alice, labelled, variants, field, words):
    status, refused = api(alice, "post", "/api/prompts/meeting-notes/split/", {"variants": variants})
    assert status == 400
    assert refused["error"].startswith(f"{field}: {words}"), refused
    assert not PromptSplit.objects.exists()


def test_weights_that_round_to_one_are_accepted(alice, labelled):
    services.label_move(prompt=labelled, name="staging", version=labelled.versions.get(number=2), user=alice)
    thirds = [{"label": name, "weight": w} for name, w in (("production", 0.7), ("candidate", 0.2), ("staging", 0.1))]
    assert 0.7 + 0.2 + 0.1 != 1  # 0.9999999999999999
    assert api(alice, "post", "/api/prompts/meeting-notes/split/", {"variants": thirds})[0] == 201


def test_it_refuses_a_prompt_with_one_version(alice, make_prompt):
    prompt = make_prompt(alice, slug="one-version")
    services.label_move(prompt=prompt, name="production", version=prompt.versions.get(), user=alice)
    services.label_move(prompt=prompt, name="candidate", version=prompt.versions.get(), user=alice)
    status, refused = api(alice, "post", "/api/prompts/one-version/split/", SPLIT)
    assert status == 400 and refused["error"] == "variants: a split needs two versions: “One version” has one"


def test_it_refuses_labels_that_point_at_one_version(alice, labelled):
    services.label_move(prompt=labelled, name="candidate", version=labelled.versions.get(number=1), user=alice)
    status, refused = api(alice, "post", "/api/prompts/meeting-notes/split/", SPLIT)
    assert status == 400 and "the labels all point at v1: a split needs two versions" in refused["error"]


def test_only_the_owner_editors_and_staff_split_end_or_promote(alice, bob, carol, labelled):
    for method, path, body in (
        ("post", "/api/prompts/meeting-notes/split/", SPLIT),
        ("delete", "/api/prompts/meeting-notes/split/", None),
        ("post", "/api/prompts/meeting-notes/split/promote/", {"label": "candidate"}),
    ):
        status, refused = api(bob, method, path, body)
        assert status == 403 and "can change “Meeting notes”" in refused["error"], (method, path)
    assert not PromptSplit.objects.exists()
    assert api(carol, "post", "/api/prompts/meeting-notes/split/", SPLIT)[0] == 201  # staff
    labelled.editors.add(bob)
    assert api(bob, "delete", "/api/prompts/meeting-notes/split/")[0] == 200  # now an editor


def test_others_see_the_split_but_not_its_traffic(alice, bob, labelled):
    api(alice, "post", "/api/prompts/meeting-notes/split/", SPLIT)
    status, shown = api(bob, "get", "/api/prompts/meeting-notes/split/")
    assert status == 200 and [v["label"] for v in shown["variants"]] == ["production", "candidate"]
    assert "comparison" not in shown


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/api/prompts/no-such-prompt/split/"),
        ("post", "/api/prompts/no-such-prompt/split/"),
        ("delete", "/api/prompts/no-such-prompt/split/"),
        ("post", "/api/prompts/no-such-prompt/split/promote/"),
    ],
)
def test_a_prompt_that_does_not_exist_is_404(alice, method, path):
    status, refused = api(alice, method, path, SPLIT if method == "post" else None)
    assert status == 404 and refused["error"] == "There is no prompt “no-such-prompt”."


def test_it_needs_a_token_and_a_json_object(alice, labelled):
    assert Client().get("/api/prompts/meeting-notes/split/").status_code == 401
    status, refused = api(alice, "post", "/api/prompts/meeting-notes/split/", ["production"])
    assert status == 400 and refused["error"].startswith("Send a JSON object")

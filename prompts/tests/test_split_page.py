"""The A/B split card on a prompt's page: its editors start, change, end and promote a split there,
and a refusal is shown at the row it is about."""

import pytest

from prompts import services
from prompts.models import LabelMove, PromptSplit
from prompts.splits import split_set

pytestmark = pytest.mark.django_db


@pytest.fixture
def labelled(notes, alice):
    services.label_move(prompt=notes, name="production", version=notes.versions.get(number=1), user=alice)
    services.label_move(prompt=notes, name="candidate", version=notes.versions.get(number=2), user=alice)
    return notes


def test_the_owner_gets_the_split_form_and_others_only_see_the_split(client, alice, bob, labelled):
    client.force_login(alice)
    page = client.get("/prompts/meeting-notes/").content.decode()
    assert 'id="split"' in page and "Start a split" in page and "is served by its production label" in page
    split_set(
        prompt=labelled,
        variants=[{"label": "production", "weight": 0.9}, {"label": "candidate", "weight": 0.1}],
        user=alice,
    )
    client.force_login(bob)
    page = client.get("/prompts/meeting-notes/").content.decode()
    assert "Start a split" not in page and "Change the split" not in page and "promote" not in page
    assert "→ v2 · 10%" in page and "→ v1 · 90%" in page


def test_the_form_starts_a_split_with_weights_as_shares_or_percents(client, alice, labelled):
    client.force_login(alice)
    card = client.post(
        "/prompts/meeting-notes/split/", {"label": ["production", "candidate", ""], "weight": ["90%", "0.1", ""]}
    ).content.decode()
    assert "The split is running." in card and "Change the split" in card
    split = PromptSplit.objects.get(ended_at=None)
    assert split.variants == [{"label": "production", "weight": 0.9}, {"label": "candidate", "weight": 0.1}]


def test_a_refusal_is_shown_at_its_row_with_what_was_typed(client, alice, labelled):
    client.force_login(alice)
    card = client.post(
        "/prompts/meeting-notes/split/", {"label": ["production", "candidate", ""], "weight": ["0.9", "lots", ""]}
    ).content.decode()
    assert "Must be a number above 0" in card
    second_weight = card[card.index('id="split-weight-2"') :].split(">", 1)[0]
    assert 'aria-invalid="true"' in second_weight and 'value="lots"' in second_weight
    card = client.post(
        "/prompts/meeting-notes/split/", {"label": ["production", "candidate"], "weight": ["0.9", "0.05"]}
    ).content.decode()
    assert "The weights add up to 0.95; they must add up to 1" in card
    assert not PromptSplit.objects.exists()


def test_the_card_ends_and_promotes(client, alice, labelled):
    client.force_login(alice)
    variants = [{"label": "production", "weight": 0.5}, {"label": "candidate", "weight": 0.5}]
    split_set(prompt=labelled, variants=variants, user=alice)
    card = client.post("/prompts/meeting-notes/split/", {"end": "1"}).content.decode()
    assert "The split ended" in card and not PromptSplit.objects.filter(ended_at=None).exists()
    split_set(prompt=labelled, variants=variants, user=alice)
    card = client.post("/prompts/meeting-notes/split/promote/", {"label": "candidate"}).content.decode()
    assert "Promoted candidate: production now points at v2; the split ended." in card
    assert labelled.labels.get(name="production").version.number == 2
    assert LabelMove.objects.filter(label="production", to_number=2, moved_by=alice).exists()


def test_only_editors_change_the_split(client, bob, labelled):
    client.force_login(bob)
    assert client.post("/prompts/meeting-notes/split/", {"label": ["production"], "weight": ["1"]}).status_code == 403
    assert client.post("/prompts/meeting-notes/split/promote/", {"label": "candidate"}).status_code == 403
    assert client.post("/prompts/no-such-prompt/split/", {"end": "1"}).status_code == 404

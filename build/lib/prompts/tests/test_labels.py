"""Labels (production, staging...) point at versions; every move is kept with who and when."""

import pytest
from django.utils import timezone

from prompts import selectors, services
from prompts.models import LabelMove, PromptLabel

from .conftest import FIRST_VERSION

pytestmark = pytest.mark.django_db


def version(prompt, number):
    return prompt.versions.get(number=number)


def test_moving_a_new_label_creates_it_and_records_the_move(alice, notes):
    before = timezone.now()
    label = services.label_move(prompt=notes, name="production", version=version(notes, 1), user=alice)

    assert label.name == "production" and label.version.number == 1
    assert PromptLabel.objects.get(prompt=notes, name="production").version == version(notes, 1)
    move = LabelMove.objects.get(prompt=notes)
    assert (move.label, move.from_number, move.to_number, move.moved_by) == ("production", None, 1, alice)
    assert before <= move.moved_at <= timezone.now()


def test_moving_it_again_records_from_and_to(alice, carol, notes):
    services.label_move(prompt=notes, name="production", version=version(notes, 1), user=alice)
    services.label_move(prompt=notes, name="production", version=version(notes, 2), user=carol)

    assert PromptLabel.objects.get(prompt=notes, name="production").version.number == 2
    assert PromptLabel.objects.filter(prompt=notes).count() == 1
    latest_move = LabelMove.objects.filter(prompt=notes).first()  # newest first
    assert (latest_move.from_number, latest_move.to_number, latest_move.moved_by) == (1, 2, carol)
    assert [(m.from_number, m.to_number) for m in notes.label_moves.order_by("moved_at", "id")] == [(None, 1), (1, 2)]


def test_moving_a_label_to_where_it_already_is_records_nothing(alice, notes):
    services.label_move(prompt=notes, name="production", version=version(notes, 2), user=alice)
    services.label_move(prompt=notes, name="production", version=version(notes, 2), user=alice)
    assert LabelMove.objects.filter(prompt=notes).count() == 1


def test_label_names_are_lower_cased(alice, notes):
    services.label_move(prompt=notes, name=" Staging ", version=version(notes, 1), user=alice)
    assert list(notes.labels.values_list("name", flat=True)) == ["staging"]


@pytest.mark.parametrize("name", ["latest", "Latest", " LATEST "])
def test_latest_cannot_be_moved(alice, notes, name):
    with pytest.raises(services.PromptError) as refused:
        services.label_move(prompt=notes, name=name, version=version(notes, 1), user=alice)
    assert refused.value.field == "label"
    assert not PromptLabel.objects.exists() and not LabelMove.objects.exists()


@pytest.mark.parametrize("name", ["", "has space", "x" * 41, "-dash-first", "ünïcode"])
def test_it_refuses_label_names_outside_the_rules(alice, notes, name):
    with pytest.raises(services.PromptError) as refused:
        services.label_move(prompt=notes, name=name, version=version(notes, 1), user=alice)
    assert refused.value.field == "label"
    assert not PromptLabel.objects.exists()


def test_it_refuses_to_point_a_label_at_another_prompts_version(alice, notes, make_prompt):
    other = make_prompt(alice, slug="other", versions=(FIRST_VERSION,))
    with pytest.raises(services.PromptError) as refused:
        services.label_move(prompt=notes, name="production", version=version(other, 1), user=alice)
    assert refused.value.field == "version"
    assert not PromptLabel.objects.exists()


def test_version_resolve_follows_a_label(alice, notes):
    services.label_move(prompt=notes, name="production", version=version(notes, 1), user=alice)
    assert selectors.version_resolve(notes, label="production").number == 1


def test_version_resolve_finds_a_number_given_as_int_or_text(notes):
    assert selectors.version_resolve(notes, number=1).number == 1
    assert selectors.version_resolve(notes, number="2").number == 2


def test_version_resolve_latest_or_nothing_is_the_newest(alice, notes):
    services.label_move(prompt=notes, name="production", version=version(notes, 1), user=alice)
    assert selectors.version_resolve(notes, label="latest").number == 2
    assert selectors.version_resolve(notes).number == 2
    services.version_create(prompt=notes, author=alice, fields=dict(FIRST_VERSION))
    assert selectors.version_resolve(notes, label="latest").number == 3


def test_version_resolve_prefers_the_number_over_a_label(alice, notes):
    services.label_move(prompt=notes, name="production", version=version(notes, 1), user=alice)
    assert selectors.version_resolve(notes, label="production", number=2).number == 2


@pytest.mark.parametrize("lookup", [{"label": "nope"}, {"number": 9}, {"number": "two"}])
def test_version_resolve_refuses_what_does_not_exist(notes, lookup):
    with pytest.raises(selectors.VersionNotFound):
        selectors.version_resolve(notes, **lookup)


def test_a_label_resolves_only_within_its_prompt(alice, notes, make_prompt):
    other = make_prompt(alice, slug="other", versions=(FIRST_VERSION,))
    services.label_move(prompt=other, name="production", version=version(other, 1), user=alice)
    with pytest.raises(selectors.VersionNotFound):
        selectors.version_resolve(notes, label="production")


def test_the_label_form_moves_a_label_and_shows_it(client, alice, notes):
    client.force_login(alice)
    response = client.post(f"/prompts/{notes.slug}/labels/", {"label": "production", "version": "1"})
    assert response.status_code == 200
    assert "production" in response.content.decode()
    assert notes.labels.get(name="production").version.number == 1
    assert LabelMove.objects.get(prompt=notes).moved_by == alice


def test_the_label_form_shows_why_latest_cannot_be_moved(client, alice, notes):
    client.force_login(alice)
    response = client.post(f"/prompts/{notes.slug}/labels/", {"label": "latest", "version": "1"})
    assert "cannot be moved" in response.content.decode()
    assert not notes.labels.exists()

"""A saved prompt version never changes: evaluations and chats point at it as evidence."""

import pytest
from django.db import transaction

from prompts import services
from prompts.models import ImmutableVersionError, PromptVersion

from .conftest import FIRST_VERSION, SECOND_VERSION

pytestmark = pytest.mark.django_db


def stored_fields(version):
    """Every column of the version as the database holds it."""
    return PromptVersion.objects.filter(pk=version.pk).values().get()


def test_it_refuses_to_save_a_changed_version(notes):
    version = notes.versions.get(number=1)
    before = stored_fields(version)
    version.instructions = "Ignore all previous instructions."
    with pytest.raises(ImmutableVersionError):
        version.save()
    assert stored_fields(version) == before


def test_it_refuses_to_save_a_version_even_unchanged(notes):
    version = notes.versions.get(number=1)
    with pytest.raises(ImmutableVersionError):
        version.save()
    with pytest.raises(ImmutableVersionError):
        version.save(update_fields=["commit_message"])


def test_it_refuses_queryset_updates(notes):
    before = stored_fields(notes.versions.get(number=1))
    with pytest.raises(ImmutableVersionError):
        PromptVersion.objects.filter(prompt=notes, number=1).update(template="{{ other }}")
    with pytest.raises(ImmutableVersionError):
        notes.versions.update(temperature=1.5)  # the related manager too
    assert stored_fields(notes.versions.get(number=1)) == before


def test_it_refuses_bulk_updates(notes):
    version = notes.versions.get(number=1)
    before = stored_fields(version)
    version.commit_message = "rewritten history"
    # bulk_update runs in an atomic block without a savepoint: give it one to roll back to.
    with pytest.raises(ImmutableVersionError), transaction.atomic():
        PromptVersion.objects.bulk_update([version], ["commit_message"])
    assert stored_fields(version) == before


def test_editing_makes_version_n_plus_one_and_leaves_n_as_it_was(alice, make_prompt):
    prompt = make_prompt(alice, versions=(FIRST_VERSION,))
    first_before = stored_fields(prompt.versions.get(number=1))

    second = services.version_create(prompt=prompt, author=alice, fields=dict(SECOND_VERSION))

    assert second.number == 2
    assert list(prompt.versions.order_by("number").values_list("number", flat=True)) == [1, 2]
    assert stored_fields(prompt.versions.get(number=1)) == first_before
    second.refresh_from_db()
    assert second.instructions == SECOND_VERSION["instructions"] and second.examples == SECOND_VERSION["examples"]
    assert second.author == alice


def test_version_numbers_count_per_prompt(alice, make_prompt):
    make_prompt(alice, slug="first", versions=(FIRST_VERSION, SECOND_VERSION))
    other = make_prompt(alice, slug="second")
    assert services.version_create(prompt=other, author=alice, fields=dict(SECOND_VERSION)).number == 2

"""A prompt travels as one JSON file: export, import elsewhere, nothing lost; bad files change nothing."""

import copy
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from prompts import selectors, services
from prompts.models import LabelMove, Prompt, PromptLabel, PromptVersion

from .conftest import FIRST_VERSION, SECOND_VERSION

pytestmark = pytest.mark.django_db


@pytest.fixture
def history(alice, bob, carol, notes):
    """notes with a third version by bob (an editor) and labels moved by three people."""
    services.editor_add(prompt=notes, username="bob", user=alice)
    services.version_create(
        prompt=notes,
        author=bob,
        fields={
            **FIRST_VERSION,
            "temperature": None,
            "stop": [],
            "model": "tiny-llama",
            "commit_message": "Back to v1",
        },
    )
    version = {v.number: v for v in notes.versions.all()}
    services.label_move(prompt=notes, name="production", version=version[1], user=alice)
    services.label_move(prompt=notes, name="production", version=version[2], user=bob)
    services.label_move(prompt=notes, name="staging", version=version[3], user=carol)
    return notes


def as_file(prompt) -> dict:
    """The export as an application reads it back: through JSON text."""
    return json.loads(json.dumps(services.prompt_export(prompt)))


def counts():
    return (
        Prompt.objects.count(),
        PromptVersion.objects.count(),
        PromptLabel.objects.count(),
        LabelMove.objects.count(),
    )


def test_an_export_holds_every_version_label_and_move(history):
    exported = as_file(history)
    assert exported["format"] == "chat-prompt-studio/prompt" and exported["format_version"] == 1
    assert exported["prompt"] == {"name": history.name, "slug": "meeting-notes", "description": history.description}
    assert [v["number"] for v in exported["versions"]] == [1, 2, 3]
    assert [v["author"] for v in exported["versions"]] == ["alice", "alice", "bob"]
    assert exported["versions"][1]["examples"] == SECOND_VERSION["examples"]
    assert exported["labels"] == {"production": 2, "staging": 3}
    assert [(m["label"], m["from"], m["to"], m["moved_by"]) for m in exported["label_history"]] == [
        ("production", None, 1, "alice"),
        ("production", 1, 2, "bob"),
        ("staging", None, 3, "carol"),
    ]


CLAIMS = {"author", "created_at", "moved_by", "moved_at", "provenance"}


def content(exported: dict) -> dict:
    """An export without who and when: what an import must carry over unchanged."""
    return {
        **exported,
        "versions": [{k: v for k, v in version.items() if k not in CLAIMS} for version in exported["versions"]],
        "label_history": [{k: v for k, v in move.items() if k not in CLAIMS} for move in exported["label_history"]],
    }


def test_a_round_trip_under_a_new_slug_keeps_all_content(history, carol):
    exported = as_file(history)
    renamed = copy.deepcopy(exported)
    renamed["prompt"]["slug"] = "meeting-notes-copy"

    imported = services.prompt_import(data=renamed, owner=carol)

    assert content(as_file(imported)) == content(renamed)  # only the slug, changed by hand, differs
    assert imported.owner == carol
    assert selectors.version_resolve(imported, label="production").number == 2


def test_an_import_records_the_importer_and_keeps_the_files_claims_as_text(history, carol):
    exported = as_file(history)
    exported["prompt"]["slug"] = "meeting-notes-copy"

    imported = services.prompt_import(data=exported, owner=carol)

    versions = list(imported.versions.order_by("number"))
    assert [v.author for v in versions] == [carol, carol, carol]
    assert versions[2].provenance.startswith("imported; originally by bob, ")
    moves = list(imported.label_moves.order_by("id"))
    assert {m.moved_by for m in moves} == {carol}
    assert [m.provenance.split(",")[0] for m in moves] == [
        "imported; originally moved by alice",
        "imported; originally moved by bob",
        "imported; originally moved by carol",
    ]


def test_a_labelled_prompt_deleted_and_imported_back_keeps_all_content(history, alice):
    exported = as_file(history)
    history.delete()
    assert not Prompt.objects.filter(slug="meeting-notes").exists()

    imported = services.prompt_import(data=exported, owner=alice)

    assert content(as_file(imported)) == content(exported)


def test_an_import_claiming_another_author_binds_nothing_to_that_account(history, bob, django_user_model):
    """The finding: any user could attribute a `production` version to admin, dated 2020."""
    admin = django_user_model.objects.create_superuser("admin", password="admin-password-1")
    forged = as_file(history)
    forged["prompt"]["slug"] = "forged"
    for version in forged["versions"]:
        version.update(author="admin", created_at="2020-01-01T00:00:00+00:00")
    for move in forged["label_history"]:
        move.update(moved_by="admin", moved_at="2020-01-01T00:00:00+00:00")

    imported = services.prompt_import(data=forged, owner=bob)

    production = selectors.version_resolve(imported, label="production")
    assert production.author == bob and production.created_at.year > 2020
    assert production.provenance == "imported; originally by admin, 2020-01-01 00:00 UTC"
    assert not PromptVersion.objects.filter(author=admin).exists()
    assert not LabelMove.objects.filter(moved_by=admin).exists()
    assert all(move.moved_at.year > 2020 for move in imported.label_moves.all())


def refused_import(data, owner):
    before = counts()
    with pytest.raises(services.PromptError) as refused:
        services.prompt_import(data=data, owner=owner)
    assert counts() == before, "a refused import must write nothing"
    assert refused.value.field in str(refused.value)  # the message a person reads names the field
    return refused.value


def test_it_refuses_a_slug_that_exists(history, carol):
    refused = refused_import(as_file(history), carol)
    assert refused.field == "prompt.slug"
    assert "meeting-notes" in refused.message


@pytest.mark.parametrize(
    "example", [{"input": "only the input"}, {"input": "x", "output": "  "}, {"input": "x", "output": 3}]
)
def test_it_refuses_a_malformed_example(history, carol, example):
    exported = as_file(history)
    exported["prompt"]["slug"] = "elsewhere"
    exported["versions"][0]["examples"] = [example]
    assert refused_import(exported, carol).field == "versions[0].examples[0].output"


def test_it_refuses_an_example_with_unknown_keys(history, carol):
    exported = as_file(history)
    exported["prompt"]["slug"] = "elsewhere"
    exported["versions"][1]["examples"].append({"input": "a", "output": "b", "score": 1})
    assert refused_import(exported, carol).field == "versions[1].examples[2]"


@pytest.mark.parametrize("number", [4, 0, "2", True, None])
def test_it_refuses_a_label_on_a_version_that_is_not_in_the_file(history, carol, number):
    exported = as_file(history)
    exported["prompt"]["slug"] = "elsewhere"
    exported["labels"]["production"] = number
    assert refused_import(exported, carol).field == "labels.production"


def test_it_refuses_label_history_naming_a_version_that_is_not_in_the_file(history, carol):
    exported = as_file(history)
    exported["prompt"]["slug"] = "elsewhere"
    exported["label_history"][1]["to"] = 7
    assert refused_import(exported, carol).field == "label_history[1].to"


def test_it_refuses_a_label_named_latest(history, carol):
    exported = as_file(history)
    exported["prompt"]["slug"] = "elsewhere"
    exported["labels"]["latest"] = 1
    assert refused_import(exported, carol).field == "labels.latest"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda data: data.update(format="something/else"), "format"),
        (lambda data: data.pop("format"), "format"),
        (lambda data: data.update(format_version=2), "format_version"),
        (lambda data: data.update(versions=[]), "versions"),
        (lambda data: data["versions"][1].update(number=3), "versions[1].number"),
        (lambda data: data["versions"][2].update(template="{% if x %}"), "versions[2].template"),
        (lambda data: data["versions"][0].update(temperature="warm"), "versions[0].temperature"),
        (lambda data: data["versions"][0].update(created_at="yesterday"), "versions[0].created_at"),
        (lambda data: data["prompt"].update(slug="Not A Slug"), "prompt.slug"),
    ],
)
def test_it_refuses_a_malformed_file_naming_the_field(history, carol, change, field):
    exported = as_file(history)
    exported["prompt"]["slug"] = "elsewhere"
    change(exported)
    assert refused_import(exported, carol).field == field


@pytest.mark.parametrize("data", [[], "a prompt", None])
def test_it_refuses_a_file_that_is_not_an_object(carol, data):
    assert refused_import(data, carol).field == "(file)"


def test_it_refuses_a_bad_last_version_after_checking_the_first_ones_without_writing_them(history, carol):
    exported = as_file(history)
    exported["prompt"]["slug"] = "elsewhere"
    exported["versions"][2]["examples"] = [{"input": "x"}]
    assert refused_import(exported, carol).field == "versions[2].examples[0].output"
    assert not Prompt.objects.filter(slug="elsewhere").exists()


def test_imported_label_names_follow_the_rules_label_moves_follow(history, carol):
    exported = as_file(history)
    exported["prompt"]["slug"] = "elsewhere"
    exported["labels"] = {" Production ": 2}
    imported = services.prompt_import(data=exported, owner=carol)
    assert list(imported.labels.values_list("name", flat=True)) == ["production"]  # cleaned as a label move cleans it
    exported["prompt"]["slug"] = "elsewhere-2"
    exported["labels"] = {"no spaces allowed": 2}
    with pytest.raises(services.PromptError) as refused:
        services.prompt_import(data=exported, owner=carol)
    assert refused.value.field == "labels.no spaces allowed"


def test_it_refuses_label_history_with_a_label_no_one_could_have_moved(history, carol):
    exported = as_file(history)
    exported["prompt"]["slug"] = "elsewhere"
    exported["label_history"][0]["label"] = "x" * 41  # LabelMove.label holds 40 characters
    assert refused_import(exported, carol).field == "label_history[0].label"


# --- through the pages ----------------------------------------------------------------------


def upload(content: bytes, name="prompt-meeting-notes.json"):
    return SimpleUploadedFile(name, content, content_type="application/json")


def test_the_export_page_downloads_the_export(client, bob, history):
    client.force_login(bob)
    response = client.get(f"/prompts/{history.slug}/export/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == 'attachment; filename="prompt-meeting-notes.json"'
    assert json.loads(response.content) == as_file(history)


def test_the_import_page_imports_an_uploaded_export_and_opens_it(client, bob, history):
    exported = as_file(history)
    exported["prompt"]["slug"] = "bobs-notes"
    client.force_login(bob)

    response = client.post("/prompts/import/", {"file": upload(json.dumps(exported).encode())})

    imported = Prompt.objects.get(slug="bobs-notes")
    assert response.status_code == 302 and response["Location"] == "/prompts/bobs-notes/"
    assert imported.owner == bob and imported.versions.count() == 3


def test_the_import_page_refuses_a_file_that_is_not_json_and_creates_nothing(client, bob, history):
    client.force_login(bob)
    before = counts()
    response = client.post("/prompts/import/", {"file": upload(b'{"format": "chat-prompt-studio/prompt",')})
    assert response.status_code == 400
    assert "not valid JSON" in response.content.decode()
    assert counts() == before


def test_the_import_page_shows_the_field_it_refuses_and_creates_nothing(client, bob, history):
    client.force_login(bob)
    before = counts()
    response = client.post("/prompts/import/", {"file": upload(json.dumps(as_file(history)).encode())})
    assert response.status_code == 400
    page = response.content.decode()
    assert "Nothing was imported" in page and "prompt.slug" in page
    assert counts() == before


def test_the_import_page_asks_for_a_file(client, bob):
    client.force_login(bob)
    response = client.post("/prompts/import/")
    assert response.status_code == 400
    assert "Choose an exported prompt file" in response.content.decode()
    assert not Prompt.objects.exists()

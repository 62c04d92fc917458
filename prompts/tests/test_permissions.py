"""Everyone signed in reads every prompt; only the owner, the editors they add and staff change one."""

import pytest

from prompts import services
from prompts.models import LabelMove, Prompt, PromptLabel, PromptVersion

from .conftest import SECOND_VERSION

pytestmark = pytest.mark.django_db

VERSION_FORM = {
    "instructions": "Answer in French.",
    "template": "Résume : {{ text }}",
    "example_input": ["a", ""],
    "example_output": ["b", ""],
    "model": "",
    "temperature": "0.7",
    "top_p": "",
    "max_new_tokens": "128",
    "stop": "###\nEND",
    "commit_message": "French",
}


def written():
    return (
        Prompt.objects.count(),
        PromptVersion.objects.count(),
        PromptLabel.objects.count(),
        LabelMove.objects.count(),
        Prompt.editors.through.objects.count(),
    )


@pytest.mark.parametrize(
    "path",
    [
        "/prompts/",
        "/prompts/meeting-notes/",
        "/prompts/meeting-notes/versions/1/",
        "/prompts/meeting-notes/diff/?from=1&to=2",
        "/prompts/meeting-notes/export/",
        "/prompts/meeting-notes/playground/",
        "/prompts/new/",
    ],
)
def test_another_user_can_read_every_page_of_alices_prompt(client, bob, notes, path):
    client.force_login(bob)
    assert client.get(path).status_code == 200


def test_another_user_can_preview_in_the_playground(client, bob, notes, monkeypatch):
    monkeypatch.setattr("prompts.selectors.prompt_counter", lambda: None)  # no tokenizer: no model loading here
    client.force_login(bob)
    response = client.post(
        "/prompts/meeting-notes/playground/preview/",
        {"a": "1", "b": "2", "var_audience": "the team", "var_text": "We ship Friday."},
    )
    assert response.status_code == 200
    assert "We ship Friday." in response.content.decode()


def test_another_user_can_create_a_prompt_of_his_own(client, bob, notes):
    client.force_login(bob)
    response = client.post("/prompts/new/", {**VERSION_FORM, "name": "Bob's French notes", "slug": ""})
    prompt = Prompt.objects.get(slug="bobs-french-notes")
    assert response.status_code == 302 and response["Location"] == "/prompts/bobs-french-notes/"
    assert prompt.owner == bob
    version = prompt.versions.get()
    assert (version.number, version.author, version.examples) == (1, bob, [{"input": "a", "output": "b"}])
    assert (version.temperature, version.max_new_tokens, version.stop) == (0.7, 128, ["###", "END"])


@pytest.mark.parametrize(
    ("method", "path", "form"),
    [
        ("get", "/prompts/meeting-notes/versions/new/", {}),
        ("post", "/prompts/meeting-notes/versions/new/", VERSION_FORM),
        ("post", "/prompts/meeting-notes/labels/", {"label": "production", "version": "1"}),
        ("post", "/prompts/meeting-notes/editors/", {"username": "bob"}),
    ],
)
def test_another_user_is_refused_every_change(client, bob, notes, method, path, form):
    before = written()
    client.force_login(bob)
    assert getattr(client, method)(path, form).status_code == 403
    assert written() == before


def test_another_user_cannot_remove_an_editor(client, alice, bob, carol, notes):
    services.editor_add(prompt=notes, username="carol", user=alice)
    client.force_login(bob)
    assert client.post("/prompts/meeting-notes/editors/", {"remove": str(carol.pk)}).status_code == 403
    assert list(notes.editors.all()) == [carol]


def test_the_services_refuse_another_user_before_writing_anything(bob, notes):
    before = written()
    version_1 = notes.versions.get(number=1)
    refusals = [
        lambda: services.version_create(prompt=notes, author=bob, fields=dict(SECOND_VERSION)),
        lambda: services.label_move(prompt=notes, name="production", version=version_1, user=bob),
        lambda: services.editor_add(prompt=notes, username="bob", user=bob),
        lambda: services.editor_remove(prompt=notes, editor_id=bob.pk, user=bob),
    ]
    for refused in refusals:
        with pytest.raises(services.PromptPermissionError) as error:
            refused()
        assert "alice" in str(error.value)  # says who can change it
    assert written() == before


def test_version_create_by_another_user_refuses_even_a_malformed_version_as_a_permission_error(bob, notes):
    # Permission is checked first: bob learns nothing about what would have been valid.
    with pytest.raises(services.PromptPermissionError):
        services.version_create(prompt=notes, author=bob, fields={"template": "{% if %}"})
    assert notes.versions.count() == 2


def test_once_alice_adds_bob_as_editor_he_can_make_a_version(client, alice, bob, notes):
    client.force_login(alice)
    response = client.post("/prompts/meeting-notes/editors/", {"username": "bob"})
    assert response.status_code == 200
    assert list(notes.editors.all()) == [bob]

    client.force_login(bob)
    response = client.post("/prompts/meeting-notes/versions/new/", VERSION_FORM)
    assert response.status_code == 302 and response["Location"] == "/prompts/meeting-notes/versions/3/"
    version = notes.versions.get(number=3)
    assert version.author == bob and version.instructions == "Answer in French."


def test_adding_an_editor_who_does_not_exist_says_so(client, alice, notes):
    client.force_login(alice)
    response = client.post("/prompts/meeting-notes/editors/", {"username": "nobody"})
    assert "nobody" in response.content.decode()
    assert not notes.editors.exists()


def test_once_removed_an_editor_is_refused_again(alice, bob, notes):
    services.editor_add(prompt=notes, username="bob", user=alice)
    services.editor_remove(prompt=notes, editor_id=bob.pk, user=alice)
    with pytest.raises(services.PromptPermissionError):
        services.version_create(prompt=notes, author=bob, fields=dict(SECOND_VERSION))


def test_staff_can_make_a_version_of_anyones_prompt(client, carol, notes):
    client.force_login(carol)
    assert client.get("/prompts/meeting-notes/versions/new/").status_code == 200
    response = client.post("/prompts/meeting-notes/versions/new/", VERSION_FORM)
    assert response.status_code == 302
    assert notes.versions.get(number=3).author == carol


def test_staff_can_move_labels_on_anyones_prompt(client, carol, notes):
    client.force_login(carol)
    assert client.post("/prompts/meeting-notes/labels/", {"label": "production", "version": "2"}).status_code == 200
    assert notes.labels.get(name="production").version.number == 2


def test_anonymous_visitors_are_sent_to_login_from_every_page(client, notes):
    pages = [
        ("get", "/prompts/"),
        ("get", "/prompts/new/"),
        ("post", "/prompts/new/"),
        ("post", "/prompts/import/"),
        ("get", "/prompts/meeting-notes/"),
        ("get", "/prompts/meeting-notes/versions/1/"),
        ("get", "/prompts/meeting-notes/versions/new/"),
        ("post", "/prompts/meeting-notes/versions/new/"),
        ("post", "/prompts/meeting-notes/versions/1/chat/"),
        ("get", "/prompts/meeting-notes/diff/"),
        ("post", "/prompts/meeting-notes/labels/"),
        ("post", "/prompts/meeting-notes/editors/"),
        ("get", "/prompts/meeting-notes/export/"),
        ("get", "/prompts/meeting-notes/playground/"),
        ("post", "/prompts/meeting-notes/playground/preview/"),
        ("post", "/prompts/meeting-notes/playground/run/"),
    ]
    before = written()
    for method, path in pages:
        response = getattr(client, method)(
            path, {**VERSION_FORM, "name": "x", "label": "p", "version": "1", "username": "x"}
        )
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), path
    assert written() == before

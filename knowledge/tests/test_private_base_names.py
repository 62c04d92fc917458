"""A private knowledge base's name is its owner's (issue 25: it could be confirmed by guessing it in
a version form's kept-base field, and it showed on the chat panel of anyone using a version that
attaches it). What a name reveals: what the base is about ("Handbook", "Layoffs 2025"); so to
someone who may not see the base it is "a knowledge base you cannot see" wherever they read a
version (chat panel, version page, diff, version form), and a guess in the form is answered
exactly as a base that does not exist. Passages never leave it (chat/tests/test_chat_knowledge.py)."""

import json
import re

import pytest
from django.test import Client

from chat import services as chat_services
from prompts import services as prompt_services
from prompts.models import Prompt

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def bobs_prompt(bob):
    return prompt_services.prompt_create(owner=bob, name="Bob's", slug="bobs", version={"template": "{{ q }}"})


def save_version(client, slug, **fields):
    return client.post(
        f"/prompts/{slug}/versions/new/",
        {
            "from": 1,
            "template": "{{ q }}",
            "output_type": "text",
            "retrieval_k": "5",
            "retrieval_mode": "hybrid",
            "commit_message": "knowledge",
            **fields,
        },
    )


def test_a_guessed_private_name_is_answered_as_a_base_that_does_not_exist(bob, handbook, bobs_prompt):
    client = client_for(bob)
    guessed = save_version(client, "bobs", knowledge_base_kept=json.dumps({"id": handbook.pk, "name": "Handbook"}))
    invented = save_version(client, "bobs", knowledge_base_kept=json.dumps({"id": 987654, "name": "Handbook"}))
    assert guessed.status_code == invented.status_code == 302
    second, third = (version.retrieval["knowledge_bases"] for version in bobs_prompt.versions.filter(number__gt=1))
    assert second == third == [{"id": None, "name": "Handbook"}]  # not bound to alice's: "not in this studio"
    page = client.get("/prompts/bobs/versions/2/").content.decode()
    assert "Handbook (not in this studio)" in page

    # Its id alone, as the form keeps a base the editor cannot see: the same refusal as an id that is nobody's.
    by_id = save_version(client, "bobs", knowledge_base_kept=json.dumps({"id": handbook.pk}))
    by_nothing = save_version(client, "bobs", knowledge_base_kept=json.dumps({"id": 987654}))
    assert by_id.status_code == by_nothing.status_code == 400
    alerts = [
        re.findall(r'<p class="alert" role="alert">(.*?)</p>', answer.content.decode())
        for answer in (by_id, by_nothing)
    ]
    assert alerts[0] == alerts[1] and any(
        "there is no such knowledge base, or it is not shared with you" in alert for alert in alerts[0]
    )


def test_the_chat_panel_names_a_base_only_to_those_who_may_see_it(alice, bob, handbook):
    prompt = prompt_services.prompt_create(
        owner=alice,
        name="Support",
        slug="support",
        version={"template": "{{ question }}", "retrieval": {"knowledge_bases": [handbook.pk]}},
    )
    version = prompt.versions.get()
    bobs_chat, _ = chat_services.conversation_start_from_prompt(
        owner=bob, prompt_version=version, variables={"question": "Holidays?"}
    )
    alices_chat, _ = chat_services.conversation_start_from_prompt(
        owner=alice, prompt_version=version, variables={"question": "Holidays?"}
    )
    bobs_panel = client_for(bob).get(f"/chat/{bobs_chat.pk}/knowledge/").content.decode()
    assert "Handbook" not in bobs_panel
    assert "a knowledge base you cannot see" in bobs_panel and "gives you nothing" in bobs_panel
    alices_panel = client_for(alice).get(f"/chat/{alices_chat.pk}/knowledge/").content.decode()
    assert "Handbook" in alices_panel and "a knowledge base you cannot see" not in alices_panel
    assert "Handbook" not in client_for(bob).get(f"/chat/{bobs_chat.pk}/").content.decode()


def test_an_editor_who_cannot_see_a_base_keeps_it_without_reading_its_name(alice, bob, handbook):
    prompt = prompt_services.prompt_create(
        owner=alice,
        name="Support",
        slug="support",
        version={"template": "{{ q }}", "retrieval": {"knowledge_bases": [handbook.pk]}},
    )
    prompt_services.version_create(
        prompt=prompt, author=alice, fields={"template": "{{ q }} v2", "retrieval": {"knowledge_bases": [handbook.pk]}}
    )
    prompt.editors.add(bob)
    client = client_for(bob)
    form = client.get("/prompts/support/versions/new/?from=2").content.decode()
    assert "Handbook" not in form and "a knowledge base you cannot see" in form
    assert f'value="{{&quot;id&quot;: {handbook.pk}}}"' in form  # kept by its id alone
    for page in ("/prompts/support/versions/2/", "/prompts/support/diff/?from=1&to=2"):
        assert "Handbook" not in client.get(page).content.decode()
    assert (
        save_version(client, "support", **{"from": 2}, knowledge_base_kept=json.dumps({"id": handbook.pk})).status_code
        == 302
    )
    kept = Prompt.objects.get(slug="support").versions.get(number=3).retrieval["knowledge_bases"]
    assert kept == [{"id": handbook.pk, "name": "Handbook"}]  # carried from the versions before: alice still gets it
    assert "Handbook" in client_for(alice).get("/prompts/support/versions/3/").content.decode()

"""Playground runs are kept: the playground lists the person's last runs of the prompt (version,
model, parameters, passages, time, tokens), each opens again with what was sent, the reply, its
passages and figures; two are compared side by side; a run is flagged through the flag form.
Nobody else's run is listed or opened (404)."""

import pytest
from django.utils import timezone

from chat.models import Conversation, Message
from chat.tests.test_chat_knowledge import make_base
from evals.models import FailureCase
from prompts import services as prompt_services

pytestmark = pytest.mark.django_db


@pytest.fixture
def helpdesk(alice, settings, tmp_path):
    """alice's prompt whose versions retrieve from her handbook (v1 and v2 differ in temperature)."""
    settings.KNOWLEDGE_FILES_DIR = tmp_path / "knowledge"
    settings.KNOWLEDGE_CHUNK_TOKENS, settings.KNOWLEDGE_CHUNK_OVERLAP = 24, 0
    handbook = make_base(
        alice,
        "Handbook",
        [
            (
                "router.md",
                "# Network\n\nTo restart the router, hold the power button for ten seconds until the lights blink.",
            )
        ],
        shared=True,
    )
    first = {
        "instructions": "Answer from the handbook.",
        "template": "{{ question }}",
        "temperature": 0.2,
        "top_p": 0.9,
        "max_new_tokens": 48,
        "retrieval": {"knowledge_bases": [handbook.pk], "k": 2},
    }
    prompt = prompt_services.prompt_create(owner=alice, name="Helpdesk", slug="helpdesk", version=dict(first))
    prompt_services.version_create(
        prompt=prompt, author=alice, fields={**first, "temperature": 0.7, "commit_message": "warmer"}
    )
    return prompt


def run(client, user, *, question="How do I restart the router?", **versions):
    client.force_login(user)
    response = client.post("/prompts/helpdesk/playground/run/", {**versions, "var_question": question})
    assert response.status_code == 200
    return response


def written(run_conversation, *, text="Hold the power button [1].", completion_tokens=48, finish_reason="length"):
    """The run's reply as a model worker stores it."""
    reply = run_conversation.messages.get(role="assistant")
    Message.objects.filter(pk=reply.pk).update(
        status="complete",
        content=text,
        prompt_tokens=131,
        completion_tokens=completion_tokens,
        tokens_per_s=55.5,
        ttft_ms=20,
        model_name="tiny-llama-v2",
        finish_reason=finish_reason,
        finished_at=timezone.now(),
        parameters={"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 48},
    )
    return reply


def runs_of(user):
    return list(Conversation.objects.filter(owner=user, kind="playground").order_by("pk"))


def test_the_playground_lists_the_persons_last_runs_with_their_figures(client, alice, bob, helpdesk):
    response = run(client, alice, a="2", b="1")
    assert response["HX-Trigger"] == "playground-runs-changed"  # the list refreshes
    older, newer = runs_of(alice)  # v2 first, then v1 (the order they were asked in)
    written(older)
    run(client, bob, a="1", question="bob's own question")

    client.force_login(alice)
    page = client.get("/prompts/helpdesk/playground/").content.decode()
    listed = page[page.index('id="run-list"') :]
    rows = listed.count("<tr data-run=")
    assert rows == 2, "alice's two runs, not bob's"
    assert f'data-run="{older.pk}"' in listed and f'data-run="{newer.pk}"' in listed
    assert listed.index(f'data-run="{newer.pk}"') < listed.index(f'data-run="{older.pk}"')  # newest first
    assert "v2" in listed and "v1" in listed and "tiny-llama-v2" in listed
    assert "T 0.7 · top-p 0.9 · max 48" in listed and "131 + 48" in listed and "cut at 48" in listed
    assert "<td>1</td>" in listed  # the passage the reply read
    assert older.created_at.strftime("%H:%M") in listed
    # The list alone, as htmx refreshes it.
    fragment = client.get("/prompts/helpdesk/playground/runs/").content.decode()
    assert fragment.count("<tr data-run=") == 2 and "<html" not in fragment

    client.force_login(bob)
    bobs = client.get("/prompts/helpdesk/playground/runs/").content.decode()
    assert bobs.count("<tr data-run=") == 1 and f'data-run="{older.pk}"' not in bobs


def test_a_run_opens_again_with_what_was_sent_its_reply_passages_and_figures(client, alice, helpdesk):
    run(client, alice, a="2")
    reply = written(runs_of(alice)[0])
    conversation = runs_of(alice)[0]
    pane = client.get(f"/prompts/helpdesk/playground/runs/{conversation.pk}/").content.decode()
    assert f'id="message-{reply.pk}"' in pane and "Reply · v2" in pane
    assert "How do I restart the router?" in pane  # what was sent
    assert "Hold the power button [1]." in pane
    assert "[1] router.md" in pane and "hold the power button for ten seconds" in pane  # the passage read
    assert "131 prompt + 48 reply tokens · 55.5 tok/s · first token after 20 ms" in pane
    assert "T 0.7 · top-p 0.9 · max 48 tokens" in pane
    assert "cut at 48 tokens" in pane and "data-run-continue" in pane  # Continue, as in chat
    assert f'hx-get="/cases/flag/{reply.pk}/"' in pane


def test_a_whole_run_is_not_marked_cut(client, alice, helpdesk):
    run(client, alice, a="1")
    written(runs_of(alice)[0], completion_tokens=7, finish_reason="stop")
    pane = client.get(f"/prompts/helpdesk/playground/runs/{runs_of(alice)[0].pk}/").content.decode()
    assert "cut at" not in pane and "data-run-continue" not in pane


def test_two_runs_are_compared_side_by_side(client, alice, helpdesk):
    run(client, alice, a="1")
    run(client, alice, a="2", question="Where is part ZX-4411?")
    first, second = runs_of(alice)
    written(first, text="Ten seconds.")
    written(second, text="On the model B press.")
    page = client.get("/prompts/helpdesk/playground/compare/", {"run": [first.pk, second.pk]}).content.decode()
    assert "side-by-side--two" in page and page.count('class="card run"') == 2
    assert page.index("Ten seconds.") < page.index("On the model B press.")
    assert "Reply · v1" in page and "Reply · v2" in page

    one = client.get("/prompts/helpdesk/playground/compare/", {"run": [first.pk]})
    assert one.status_code == 400 and "Choose two runs to compare (1 chosen)." in one.content.decode()


def test_a_reopened_run_is_flagged_as_a_failure_case(client, alice, helpdesk):
    run(client, alice, a="2")
    reply = written(runs_of(alice)[0])
    form = client.get(f"/cases/flag/{reply.pk}/").content.decode()
    assert "Helpdesk v2" in form
    client.post(f"/cases/flag/{reply.pk}/", {"expected": "Hold it for ten seconds.", "split": "train"})
    case = FailureCase.objects.get()
    assert case.source == FailureCase.Source.PLAYGROUND and case.actual == "Hold the power button [1]."
    pane = client.get(f"/prompts/helpdesk/playground/runs/{runs_of(alice)[0].pk}/").content.decode()
    badge = pane[pane.index(f'id="flagged-badge-{reply.pk}"') :][:80]
    assert "hidden" not in badge  # the reopened run shows it was flagged
    listed = client.get("/prompts/helpdesk/playground/runs/").content.decode()
    assert "flagged" in listed


def test_another_persons_runs_are_never_opened_compared_or_flagged(client, alice, bob, helpdesk):
    run(client, alice, a="1")
    run(client, alice, a="2")
    first, second = runs_of(alice)
    reply = written(first)
    run(client, bob, a="1")
    bobs = runs_of(bob)[0]

    client.force_login(bob)
    assert client.get(f"/prompts/helpdesk/playground/runs/{first.pk}/").status_code == 404
    assert client.get("/prompts/helpdesk/playground/compare/", {"run": [first.pk, second.pk]}).status_code == 404
    assert client.get("/prompts/helpdesk/playground/compare/", {"run": [bobs.pk, first.pk]}).status_code == 404
    assert client.get(f"/cases/flag/{reply.pk}/").status_code == 404
    page = client.get("/prompts/helpdesk/playground/").content.decode()
    assert f'data-run="{first.pk}"' not in page and "Hold the power button" not in page
    # Nor through another prompt's playground, nor as a chat that is not a run.
    prompt_services.prompt_create(owner=alice, name="Other", slug="other", version={"template": "{{ q }}"})
    client.force_login(alice)
    assert client.get(f"/prompts/other/playground/runs/{first.pk}/").status_code == 404
    chat = Conversation.objects.create(owner=alice, prompt_version=first.prompt_version)
    assert client.get(f"/prompts/helpdesk/playground/runs/{chat.pk}/").status_code == 404
    assert client.get(f"/prompts/helpdesk/playground/runs/{first.pk}/").status_code == 200


def test_the_list_of_runs_costs_the_same_queries_for_many_runs(client, alice, helpdesk):
    run(client, alice, a="1")
    client.get("/prompts/helpdesk/playground/runs/")  # warm the per-process caches (the served models)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as one:
        client.get("/prompts/helpdesk/playground/runs/")
    for _ in range(6):
        run(client, alice, a="2")
    for conversation in runs_of(alice):
        written(conversation)
    with CaptureQueriesContext(connection) as many:
        page = client.get("/prompts/helpdesk/playground/runs/").content.decode()
    assert page.count("<tr data-run=") == 7
    assert len(many.captured_queries) == len(one.captured_queries)

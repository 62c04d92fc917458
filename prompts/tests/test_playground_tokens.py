"""The playground counts the rendered prompt with the model's own tokenizer (the tiny model's here)."""

import dataclasses

import pytest

from prompts import selectors
from studio.llm import load_prompt_counter

pytestmark = pytest.mark.django_db


@pytest.fixture
def counter(tiny_model_dir, tmp_path):
    return load_prompt_counter(str(tiny_model_dir), cache_dir=tmp_path)


def preview(client, notes, **variables):
    return client.post(
        f"/prompts/{notes.slug}/playground/preview/",
        {"a": "2", **{f"var_{name}": value for name, value in variables.items()}},
    )


def test_the_preview_shows_the_prompt_tokens_of_the_model_context(client, alice, notes, counter, monkeypatch):
    monkeypatch.setattr(selectors, "prompt_counter", lambda: counter)
    client.force_login(alice)
    page = preview(client, notes, audience="engineers", text="Ship it on Friday.").content.decode()
    version = notes.versions.get(number=2)
    from prompts.rendering import render_messages

    expected = counter.count(
        render_messages(
            instructions=version.instructions,
            examples=version.examples,
            template=version.template,
            variables={"audience": "engineers", "text": "Ship it on Friday."},
        )
    )
    assert f"{expected} prompt tokens of the model's {counter.context_length}-token context" in page
    assert "exceeds the context" not in page


def test_the_preview_warns_when_the_prompt_and_reply_do_not_fit_the_context(client, alice, notes, counter, monkeypatch):
    small = dataclasses.replace(counter, context_length=120)
    monkeypatch.setattr(selectors, "prompt_counter", lambda: small)
    client.force_login(alice)
    page = preview(client, notes, audience="engineers", text="word " * 100).content.decode()
    assert "exceeds the context" in page
    assert 'class="small warning"' in page


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "Ship it on Friday."}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! ünïcödé 🚀"},
            {"role": "user", "content": "Again,\n  with spaces"},
        ],
    ],
)
def test_the_web_process_counts_exactly_the_tokens_the_worker_feeds_the_model(counter, tiny_model, messages):
    """The counter reads tokenizer.json and the chat template without transformers (the web
    process holds no model code); a worker renders through transformers: the same ids."""
    from studio.llm.loading import chat_template_ids

    worker_ids = chat_template_ids(tiny_model.tokenizer, messages)
    assert counter.tokenizer.encode(counter.render(messages), add_special_tokens=False).ids == worker_ids
    assert counter.count(messages) == len(worker_ids)


@pytest.fixture
def handbook(alice, settings, tmp_path):
    """alice's knowledge base of two short documents, in passages of a few sentences."""
    from chat.tests.test_chat_knowledge import make_base

    settings.KNOWLEDGE_FILES_DIR = tmp_path / "knowledge"
    settings.KNOWLEDGE_CHUNK_TOKENS, settings.KNOWLEDGE_CHUNK_OVERLAP = 24, 0
    return make_base(
        alice,
        "Handbook",
        [
            (
                "router.md",
                "# Network\n\nTo restart the router, hold the power button for ten seconds until the "
                "lights blink. Then wait two minutes before you plug anything in again.",
            ),
            (
                "parts.md",
                "# Spare parts\n\nPart ZX-4411 is the return spring of the model B press.\n\n"
                "Part ZX-4412 is the gasket of the model C press.",
            ),
        ],
    )


@pytest.mark.parametrize("layout", ["system", "template"])
def test_the_preview_counts_the_retrieved_passages_a_run_sends(
    client, alice, handbook, counter, monkeypatch, make_prompt, layout
):
    """The preview shows and counts the messages exactly as a run of the version sends them: with
    the passages its retrieval finds (in the system turn, or where the template lays them out)."""
    from chat.models import Message
    from chat.selectors import chat_history_before

    template = (
        "{{ question }}"
        if layout == "system"
        else "{% for p in passages %}[{{ p.number }}] {{ p.text }}\n{% endfor %}Question: {{ question }}"
    )
    make_prompt(
        alice,
        slug="helpdesk",
        versions=[
            {
                "instructions": "Answer from the handbook.",
                "template": template,
                "max_new_tokens": 32,
                "retrieval": {"knowledge_bases": [handbook.pk], "k": 3},
            }
        ],
    )
    monkeypatch.setattr(selectors, "prompt_counter", lambda: counter)
    client.force_login(alice)
    asked = {"a": "1", "var_question": "How do I restart the router?"}
    page = client.post("/prompts/helpdesk/playground/preview/", asked).content.decode()

    client.post("/prompts/helpdesk/playground/run/", asked)
    sent = chat_history_before(message=Message.objects.get(role="assistant"))
    assert "restart the router, hold the power button" in "".join(m["content"] for m in sent)
    tokens = counter.count(sent)
    assert f"{tokens} prompt tokens (the 3 retrieved passages included)" in page
    without_passages = counter.count(
        [
            {"role": "system", "content": "Answer from the handbook."},
            {"role": "user", "content": "Question: How do I restart the router?"},
        ]
    )
    assert tokens > without_passages + 30, "the passages are a large part of what is sent"
    assert "hold the power button for ten seconds" in page  # shown as sent

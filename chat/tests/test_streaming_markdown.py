"""Markdown while a reply streams: each block that can no longer change is sent rendered once
(a `blocks` frame), so the tab shows lists and code formatted before the reply ends."""

import pytest
from channels.db import database_sync_to_async

from chat import services as chat_services
from prompts import services as prompt_services

pytestmark = pytest.mark.django_db(transaction=True)

# The model is held to this exact text by a one-choice output format: real decoding, known Markdown.
REPLY = (
    "Here is the plan:\n\n- pack 🍐 pears\n- ship them\n\n```python\nprint(1)\n\nprint(2)\n```\nDone: $x^2$ and more"
)


@database_sync_to_async
def chat_held_to(owner, text):
    prompt = prompt_services.prompt_create(
        owner=owner,
        name="Plan",
        slug="plan",
        version={
            "instructions": "Plan it.",
            "template": "{{ task }}",
            "max_new_tokens": 400,
            "output_format": {"type": "choice", "choices": [text]},
        },
    )
    conversation, _ = chat_services.conversation_start_from_prompt(
        owner=owner, prompt_version=prompt.versions.get(), variables={"task": "Ship pears"}
    )
    return conversation


async def test_finished_blocks_arrive_rendered_while_the_reply_streams(alice, chat_client, start_worker):
    conversation = await chat_held_to(alice, REPLY)
    client = await chat_client(alice, conversation.pk)
    await start_worker()
    frames = await client.receive_until("done", timeout=60)
    assert frames[-1]["status"] == "complete"
    blocks = [f for f in frames if f["type"] == "blocks"]
    rendered = [html for frame in blocks for html in frame["html"]]
    # Three blocks finished before the end (the last line is the tail until the reply ends).
    assert len(rendered) == 3, rendered
    assert rendered[0] == "<p>Here is the plan:</p>\n"
    assert "<ul>" in rendered[1] and "<li>ship them</li>" in rendered[1]
    assert (
        'class="code-block"' in rendered[2]
        and "language-python" in rendered[2]
        and '<span class="mi">2</span>' in rendered[2]
    )
    assert all(frames.index(frame) < len(frames) - 1 for frame in blocks)
    # `end` counts UTF-16 code units, as the browser slices strings: the pear is two of them.
    streamed = "".join(f["text"] for f in frames if f["type"] == "token")
    tail_start = blocks[-1]["end"]
    consumed = streamed.encode("utf-16-le")[: 2 * tail_start].decode("utf-16-le")
    assert streamed[len(consumed) :] == "Done: $x^2$ and more"


async def test_a_tab_that_joins_mid_reply_gets_the_finished_blocks_too(
    alice, chat_client, start_worker, settings, tiny_model, monkeypatch
):
    from chat.tests.test_batching import slowly

    slowly(tiny_model, monkeypatch, seconds_per_step=0.03)
    conversation = await chat_held_to(alice, REPLY)
    first_tab = await chat_client(alice, conversation.pk)
    await start_worker()
    await first_tab.receive_until("blocks", timeout=60)  # the first paragraph has finished
    second_tab = await chat_client(alice, conversation.pk)
    frames = await second_tab.receive_until("done", timeout=60)
    caught_up = [f for f in frames if f["type"] == "blocks"]
    assert caught_up and caught_up[0]["html"][0] == "<p>Here is the plan:</p>\n"
    assert sum(len(f["html"]) for f in caught_up) == 3

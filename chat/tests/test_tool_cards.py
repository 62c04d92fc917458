"""A reply that called tools shows a card per call (the tool's name, its arguments as pretty JSON),
never the raw tags; the person types each tool's result under the last reply's calls and continues:
the results become the next turn (the Hermes form) and the next reply is asked, in the playground
(htmx) and in chat (a `send` frame with `tool_results`). A turn of results shows as "Result of" cards."""

import json
import re

import pytest
from channels.db import database_sync_to_async
from django.template import Context, Template
from django.utils import timezone

from chat import services
from chat.models import Conversation, Message
from prompts import services as prompt_services
from studio.llm.tools import call_text, responses_text

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"enum": ["Oslo", "Paris"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
VERSION = {
    "template": "{{ question }}",
    "max_new_tokens": 96,
    "tools": [WEATHER],
    "tool_choice": "required",
    "parallel_tool_calls": False,
}
CALLED = "Let me look.\n" + call_text("get_weather", {"city": "Oslo"})


def shown(html: str) -> str:
    """The page as seen: without the hidden raw text kept for Copy."""
    return re.sub(r'<textarea class="message__raw" hidden>.*?</textarea>', "", html, flags=re.DOTALL)


def rendered(source: str, **context) -> str:
    return Template("{% load chat_tags %}" + source).render(Context(context))


def test_a_reply_with_calls_shows_its_text_and_a_card_per_call():
    html = rendered("{% turn_html text %}", text=CALLED + "\n" + call_text("get_weather", {"city": "Paris"}))
    assert "<tool_call>" not in html and "&lt;tool_call&gt;" not in html
    assert "Let me look." in html
    assert html.count('data-tool-call="get_weather"') == 2
    assert "&quot;city&quot;: &quot;Oslo&quot;" in html and '{\n  "city"' in html.replace("&quot;", '"')


def test_a_turn_of_results_shows_result_cards_named_by_the_calls_it_answers():
    html = rendered(
        '{% turn_html text "user" answered %}', text=responses_text(['{"temperature": 4}']), answered=CALLED
    )
    assert 'data-tool-result="get_weather"' in html and "Result of" in html
    assert "<tool_response>" not in html and "&lt;tool_response&gt;" not in html
    plain = rendered('{% turn_html "Hello **there**" "user" %}')
    assert "<strong>there</strong>" in plain  # a person's message: Markdown as before


@pytest.fixture
def weather(alice):
    return prompt_services.prompt_create(owner=alice, name="Weather", slug="weather", version=dict(VERSION))


def called(reply: Message, text: str = CALLED) -> None:
    """The reply as a model worker stores a call."""
    Message.objects.filter(pk=reply.pk).update(
        status="complete", content=text, finish_reason="stop", finished_at=timezone.now(), completion_tokens=20
    )


def start_run(client, user) -> Conversation:
    client.force_login(user)
    assert client.post("/prompts/weather/playground/run/", {"var_question": "Oslo?"}).status_code == 200
    run = Conversation.objects.get(owner=user, kind="playground")
    called(run.messages.get(role="assistant"))
    return run


@pytest.mark.django_db
def test_the_playground_shows_the_call_and_continues_with_the_typed_result(client, alice, weather):
    run = start_run(client, alice)
    pane = shown(client.get(f"/prompts/weather/playground/runs/{run.pk}/").content.decode())
    assert 'data-tool-call="get_weather"' in pane and "&lt;tool_call&gt;" not in pane
    assert "Result of <code>get_weather</code>" in pane and 'name="result"' in pane
    response = client.post(f"/prompts/weather/playground/runs/{run.pk}/tool-results/", {"result": '{"temp": 4}'})
    assert response.status_code == 200
    assert response["HX-Trigger"] == "playground-runs-changed"
    turns = list(run.messages.order_by("pk").values_list("role", "content", "status"))
    assert turns[2] == ("user", responses_text(['{"temp": 4}']), "complete")
    assert turns[3][0] == "assistant" and turns[3][2] == "queued"
    pane = shown(response.content.decode())
    assert 'data-tool-call="get_weather"' in pane and "&lt;tool_" not in pane  # the call, now an earlier turn
    assert 'data-tool-result="get_weather"' in pane and "{&quot;temp&quot;: 4}" in pane
    assert f'data-reply-id="{run.messages.order_by("pk").last().pk}"' in pane  # the new reply, to stream


@pytest.mark.django_db
def test_results_that_do_not_match_the_calls_are_refused_at_the_form(client, alice, weather):
    run = start_run(client, alice)
    for results in ([], ["a", "b"], ["  "]):
        response = client.post(f"/prompts/weather/playground/runs/{run.pk}/tool-results/", {"result": results})
        assert response.status_code == 400
        assert "one result for each call" in response.content.decode()
        assert 'class="field-error"' in response.content.decode()
    assert run.messages.count() == 2


@pytest.mark.django_db
def test_a_reply_without_calls_takes_no_results(client, alice, weather):
    run = start_run(client, alice)
    called(run.messages.get(role="assistant"), "Just text.")
    response = client.post(f"/prompts/weather/playground/runs/{run.pk}/tool-results/", {"result": "x"})
    assert response.status_code == 400 and "called no tool" in response.content.decode()
    assert run.messages.count() == 2


@pytest.mark.django_db
def test_another_person_cannot_continue_or_see_a_run(client, alice, bob, weather):
    run = start_run(client, alice)
    client.force_login(bob)
    assert client.get(f"/prompts/weather/playground/runs/{run.pk}/").status_code == 404
    response = client.post(f"/prompts/weather/playground/runs/{run.pk}/tool-results/", {"result": "x"})
    assert response.status_code == 404
    assert run.messages.count() == 2
    client.logout()
    assert client.post(f"/prompts/weather/playground/runs/{run.pk}/tool-results/", {"result": "x"}).status_code == 302


@pytest.mark.django_db
def test_a_chat_from_a_version_shows_cards_and_a_results_form_under_the_last_reply(client, alice, weather):
    version = weather.versions.get()
    conversation, reply = services.conversation_start_from_prompt(
        owner=alice, prompt_version=version, variables={"question": "Oslo?"}, template_every_turn=True
    )
    called(reply)
    client.force_login(alice)
    page = shown(client.get(conversation.get_absolute_url()).content.decode())
    assert "&lt;tool_call&gt;" not in page
    assert 'data-tool-call="get_weather"' in page and "data-tool-results" in page
    user_turn, next_reply = services.tool_results_send(conversation=conversation, results=['{"temp": 4}'])
    assert user_turn.content == responses_text(['{"temp": 4}'])  # not put through the template
    assert next_reply.status == "queued"
    result = shown(client.get(f"/chat/{conversation.pk}/messages/{user_turn.pk}/").content.decode())
    assert 'data-tool-result="get_weather"' in result and "&lt;tool_response&gt;" not in result


@pytest.mark.django_db(transaction=True)
async def test_the_socket_sends_tool_results_as_the_next_turn(alice, channel_layer, chat_client, weather):
    version = await database_sync_to_async(weather.versions.get)()
    conversation, reply = await database_sync_to_async(services.conversation_start_from_prompt)(
        owner=alice, prompt_version=version, variables={"question": "Oslo?"}
    )
    await database_sync_to_async(called)(reply)
    client = await chat_client(alice, conversation.pk)
    while (await client.receive())["message"]["id"] != reply.pk:  # the history, up to the reply
        pass
    await client.send({"type": "send", "tool_results": ["sunny"]})
    frames = await client.receive_until("branch")
    sent = [f["message"] for f in frames if f["type"] == "message"]
    assert sent[0]["role"] == "user" and sent[0]["content"] == responses_text(["sunny"])
    assert sent[1]["role"] == "assistant" and sent[1]["status"] == "queued"
    await client.send({"type": "send", "tool_results": ["one", "two"]})
    error = (await client.receive_until("error"))[-1]
    assert error["code"] == "tool_results_not_asked"  # the last reply is the queued one: no calls yet
    await client.close()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("model_worker")
def test_the_playground_continue_flow_on_the_tiny_model(client, alice, weather):
    """Served: the required choice makes the reply a call; its result typed; the next reply written."""
    client.force_login(alice)
    assert client.post("/prompts/weather/playground/run/", {"var_question": "Oslo?"}).status_code == 200
    run = Conversation.objects.get(owner=alice, kind="playground")
    first = wait_finished(run.messages.get(role="assistant"))
    assert first.status == "complete", first.error
    pane = client.get(f"/prompts/weather/playground/runs/{run.pk}/").content.decode()
    assert 'data-tool-call="get_weather"' in pane and 'name="result"' in pane
    response = client.post(f"/prompts/weather/playground/runs/{run.pk}/tool-results/", {"result": '{"temp": 4}'})
    assert response.status_code == 200
    second = wait_finished(run.messages.filter(role="assistant").order_by("pk").last())
    assert second.pk != first.pk and second.status == "complete", second.error
    assert second.parent.content == responses_text(['{"temp": 4}'])
    json.loads(services_calls(second)[0]["function"]["arguments"])  # required: a call again, valid JSON


def services_calls(message):
    from studio.llm.tools import read_reply

    return read_reply(message.content)[1]


def wait_finished(message: Message, deadline_s: float = 120) -> Message:
    import time

    give_up = time.monotonic() + deadline_s
    while time.monotonic() < give_up:
        message.refresh_from_db()
        if not message.in_progress:
            return message
        time.sleep(0.1)
    raise AssertionError(f"reply {message.pk} still {message.status} after {deadline_s} s")

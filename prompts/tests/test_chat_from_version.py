"""A chat started from a prompt version: its instructions, examples and parameters apply to every reply."""

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from chat import selectors as chat_selectors
from chat import services as chat_services
from chat.models import Conversation, Message
from chat.serving import queue
from chat.serving.wakeups import REQUEST_CHANNEL
from prompts.rendering import MissingVariablesError

from .conftest import FIRST_VERSION, SECOND_VERSION

pytestmark = pytest.mark.django_db

VARIABLES = {"audience": "the team", "text": "We ship on Friday."}
USER_TURN = "Summarize for the team:\nWe ship on Friday."


@pytest.fixture
def version_2(notes):
    return notes.versions.get(number=2)


@pytest.fixture
def request_channel():
    """The in-memory channel the model workers read reply requests from, empty before and after."""
    layer = get_channel_layer()
    async_to_sync(layer.flush)()
    yield layer
    async_to_sync(layer.flush)()


def start(user, version, variables=VARIABLES, **kwargs):
    return chat_services.conversation_start_from_prompt(
        owner=user, prompt_version=version, variables=variables, **kwargs
    )


def test_it_starts_a_conversation_from_the_version(bob, version_2):
    conversation, reply = start(bob, version_2, {**VARIABLES, "unused": "dropped"})

    conversation.refresh_from_db()
    assert conversation.owner == bob and conversation.kind == Conversation.Kind.CHAT
    assert conversation.prompt_version == version_2
    assert conversation.prompt_variables == VARIABLES  # only what the template uses is kept
    assert conversation.system_prompt == SECOND_VERSION["instructions"]
    assert conversation.title == "Meeting notes v2"
    assert [(m.role, m.content, m.status) for m in conversation.messages.all()] == [
        ("user", USER_TURN, Message.Status.COMPLETE),
        ("assistant", "", Message.Status.QUEUED),
    ]
    assert reply == conversation.messages.last()


def test_the_reply_reads_the_few_shot_examples_after_the_system_message(bob, version_2):
    _, reply = start(bob, version_2)
    assert chat_selectors.chat_history_before(message=reply) == [
        {"role": "system", "content": SECOND_VERSION["instructions"]},
        {"role": "user", "content": SECOND_VERSION["examples"][0]["input"]},
        {"role": "assistant", "content": SECOND_VERSION["examples"][0]["output"]},
        {"role": "user", "content": SECOND_VERSION["examples"][1]["input"]},
        {"role": "assistant", "content": SECOND_VERSION["examples"][1]["output"]},
        {"role": "user", "content": USER_TURN},
    ]


def test_later_replies_still_read_the_examples_before_the_dialogue(bob, version_2):
    conversation, first_reply = start(bob, version_2)
    queue.reply_claim(message_id=first_reply.pk, worker_channel="test", model_name="tiny")
    queue.reply_finish(message_id=first_reply.pk, content="Shipping Friday.", status="complete", usage={})
    _, second_reply = chat_services.reply_request(conversation=conversation, content="Shorter?")

    history = chat_selectors.chat_history_before(message=second_reply)
    assert [m["role"] for m in history] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert history[-3:] == [
        {"role": "user", "content": USER_TURN},
        {"role": "assistant", "content": "Shipping Friday."},
        {"role": "user", "content": "Shorter?"},
    ]
    conversation.refresh_from_db()
    assert conversation.title == "Meeting notes v2"  # the first message does not rename it


def test_the_reply_uses_the_versions_generation_parameters(bob, version_2):
    _, reply = start(bob, version_2)
    assert chat_selectors.generation_overrides(message=reply) == {
        "temperature": 0.2,
        "top_p": 0.9,
        "max_new_tokens": 64,
        "stop": ("###",),
    }


def test_a_version_without_parameters_leaves_the_studios_defaults(alice, bob, make_prompt):
    plain = make_prompt(
        alice,
        slug="plain",
        versions=({**FIRST_VERSION, "temperature": None, "top_p": None, "max_new_tokens": None, "stop": []},),
    )
    _, reply = start(bob, plain.versions.get())
    assert chat_selectors.generation_overrides(message=reply) == {}


def test_a_plain_conversation_has_no_overrides_or_examples(bob):
    conversation = chat_services.conversation_create(owner=bob, system_prompt="Be kind.")
    _, reply = chat_services.reply_request(conversation=conversation, content="Hi")
    assert chat_selectors.generation_overrides(message=reply) == {}
    assert chat_selectors.chat_history_before(message=reply) == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
    ]


def test_playground_runs_stay_out_of_the_chat_list(bob, version_2):
    chat, _ = start(bob, version_2)
    playground_run, _ = start(bob, version_2, kind=Conversation.Kind.PLAYGROUND)
    assert list(chat_selectors.conversations_for(user=bob)) == [chat]
    assert playground_run.kind == Conversation.Kind.PLAYGROUND


def test_a_missing_variable_starts_nothing(bob, version_2):
    with pytest.raises(MissingVariablesError) as refused:
        start(bob, version_2, {"text": "We ship on Friday.", "audience": " "})
    assert refused.value.missing == ["audience"]
    assert not Conversation.objects.exists() and not Message.objects.exists()


def test_a_rendered_turn_over_the_message_limit_starts_nothing(bob, version_2, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 30
    with pytest.raises(chat_services.ChatError) as refused:
        start(bob, version_2)
    assert "limit" in str(refused.value)
    assert not Conversation.objects.exists()


# --- through the pages ----------------------------------------------------------------------


def test_the_chat_button_opens_the_new_conversation_and_asks_a_worker_for_the_reply(
    client, bob, version_2, request_channel, django_capture_on_commit_callbacks
):
    client.force_login(bob)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/prompts/meeting-notes/versions/2/chat/",
            {"var_audience": "the team", "var_text": "We ship on Friday.", "confirmed": "1"},
        )

    conversation = Conversation.objects.get()
    reply = conversation.messages.get(role="assistant")
    assert response.status_code == 302 and response["Location"] == f"/chat/{conversation.pk}/"
    assert conversation.owner == bob and conversation.prompt_version == version_2
    assert conversation.messages.get(role="user").content == USER_TURN
    assert reply.status == "queued"  # the row is the queue; a message wakes a worker
    assert async_to_sync(request_channel.receive)(REQUEST_CHANNEL) == {"wake": True}


def test_the_chat_page_shows_the_prompt_and_version_it_started_from(client, bob, version_2):
    client.force_login(bob)
    response = client.post(
        "/prompts/meeting-notes/versions/2/chat/",
        {"var_audience": "the team", "confirmed": "1", "var_text": "We ship on Friday."},
    )
    page = client.get(response["Location"]).content.decode()
    assert "Meeting notes v2" in page
    assert "We ship on Friday." in page


def test_the_chat_button_answers_htmx_with_a_client_redirect(client, bob, version_2):
    client.force_login(bob)
    response = client.post(
        "/prompts/meeting-notes/versions/2/chat/",
        {"var_audience": "a", "var_text": "b", "confirmed": "1"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == f"/chat/{Conversation.objects.get().pk}/"


def test_the_chat_button_explains_a_missing_variable_and_starts_nothing(
    client, bob, version_2, django_capture_on_commit_callbacks
):
    client.force_login(bob)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(
            "/prompts/meeting-notes/versions/2/chat/", {"var_text": "We ship on Friday.", "confirmed": "1"}
        )
    assert response.status_code == 400
    assert "audience" in response.content.decode()
    assert not Conversation.objects.exists() and callbacks == []


def test_the_chat_button_answers_404_for_a_version_that_does_not_exist(client, bob, notes):
    client.force_login(bob)
    assert client.post("/prompts/meeting-notes/versions/9/chat/", {**VARIABLES, "confirmed": "1"}).status_code == 404
    assert not Conversation.objects.exists()


def test_a_playground_run_starts_one_hidden_conversation_per_version(
    client, bob, notes, request_channel, django_capture_on_commit_callbacks
):
    client.force_login(bob)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/prompts/meeting-notes/playground/run/",
            {"a": "1", "b": "2", "var_audience": "the team", "var_text": "We ship on Friday."},
        )
    assert response.status_code == 200
    runs = Conversation.objects.order_by("prompt_version__number")
    assert [(run.kind, run.prompt_version.number) for run in runs] == [("playground", 1), ("playground", 2)]
    assert list(chat_selectors.conversations_for(user=bob)) == []
    assert [async_to_sync(request_channel.receive)(REQUEST_CHANNEL) for _ in runs] == [{"wake": True}] * 2
    assert set(Message.objects.filter(role="assistant").values_list("status", flat=True)) == {"queued"}


def test_the_chat_button_first_shows_the_message_the_values_make_and_sends_nothing(client, bob, version_2):
    client.force_login(bob)
    response = client.post(
        "/prompts/meeting-notes/versions/2/chat/",
        {"var_audience": "placeholder", "var_text": "left over from a run"},
        HTTP_HX_REQUEST="true",
    )
    page = response.content.decode()
    assert response.status_code == 200 and "Summarize for placeholder:\nleft over from a run" in page
    assert "Send it and open the chat" in page and "Later messages are sent as typed" in page
    assert not Conversation.objects.exists()


@pytest.fixture
def one_variable(alice, make_prompt):
    prompt = make_prompt(
        alice, slug="orders", versions=[{**FIRST_VERSION, "template": "Order: {{ order }}", "examples": []}]
    )
    return prompt.versions.get(number=1)


def test_a_chat_can_send_every_message_through_a_one_variable_template(client, bob, one_variable):
    from evals.services import flag_prefill

    client.force_login(bob)
    page = client.post("/prompts/orders/versions/1/chat/", {"var_order": "2 pears"}).content.decode()
    assert "go through the template too, as <code>order</code>" in page
    client.post(
        "/prompts/orders/versions/1/chat/", {"var_order": "2 pears", "confirmed": "1", "later_turns": "template"}
    )
    conversation = Conversation.objects.get()
    assert conversation.template_every_turn
    Message.objects.filter(conversation=conversation, role="assistant").update(status="complete", content="ok")
    _, reply = chat_services.reply_request(conversation=conversation, content="3 figs")
    assert conversation.messages.filter(role="user").last().content == "Order: 3 figs"
    Message.objects.filter(pk=reply.pk).update(status="complete", content="figs")
    reply.refresh_from_db()
    assert flag_prefill(reply)["input_variables"] == {"order": "3 figs"}  # the case keeps the variable
    assert (
        "Every message you send is the value of <code>order</code>"
        in client.get(conversation.get_absolute_url()).content.decode()
    )


def test_by_default_only_the_first_message_goes_through_the_template_and_the_page_says_so(client, bob, one_variable):
    client.force_login(bob)
    client.post("/prompts/orders/versions/1/chat/", {"var_order": "2 pears", "confirmed": "1", "later_turns": "typed"})
    conversation = Conversation.objects.get()
    Message.objects.filter(conversation=conversation, role="assistant").update(status="complete", content="ok")
    chat_services.reply_request(conversation=conversation, content="3 figs")
    assert conversation.messages.filter(role="user").last().content == "3 figs"
    assert (
        "Only the first message went through the template"
        in client.get(conversation.get_absolute_url()).content.decode()
    )

"""Flagging a reply captures the four columns (prompt, input + context, actual, expected)."""

import pytest

from chat.models import Conversation, Message
from chat.services import conversation_start_from_prompt, message_append
from evals import services
from evals.models import FailureCase

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


def test_a_flagged_plain_chat_reply_keeps_input_context_actual_and_is_private(client, alice, chat_with_reply):
    conversation, reply = chat_with_reply
    client.force_login(alice)
    form = client.get(f"/cases/flag/{reply.pk}/", headers=HTMX).content.decode()
    assert "Plain chat" in form and "What is 2 + 2?" in form and "Share with the team" in form
    response = client.post(
        f"/cases/flag/{reply.pk}/",
        {"expected": "4", "tags": "Math, arithmetic", "note": "off by one", "split": "eval"},
        headers=HTMX,
    )
    assert response.status_code == 200 and "Flagged as" in response.content.decode()
    assert 'id="flagged-badge-%d" hx-swap-oob="true"' % reply.pk in response.content.decode()
    case = FailureCase.objects.get()
    assert case.prompt_version is None and case.input_text == "What is 2 + 2?" and case.input_variables == {}
    assert case.context == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
    assert (case.actual, case.expected, case.model_name) == ("5", "4", "tiny-llama-v2")
    assert sorted(t.name for t in case.tags.all()) == ["arithmetic", "math"]
    assert (case.split, case.note, case.source, case.status) == ("eval", "off by one", "chat", "open")
    assert case.shared is False and case.created_by == alice  # plain chat: private unless shared
    reply.refresh_from_db()
    assert reply.flagged_at is not None
    page = client.get(f"/chat/{conversation.pk}/").content.decode()
    assert f'id="flagged-badge-{reply.pk}" ' in page and f'id="flagged-badge-{reply.pk}" hidden' not in page


def test_a_flagged_playground_run_keeps_the_version_and_its_variables(client, alice, order_version):
    conversation, queued = conversation_start_from_prompt(
        owner=alice, prompt_version=order_version, variables={"order": "two pears"}, kind=Conversation.Kind.PLAYGROUND
    )
    Message.objects.filter(pk=queued.pk).update(status="complete", content="pears!", model_name="tiny")
    client.force_login(alice)
    client.post(
        f"/cases/flag/{queued.pk}/", {"expected": '{"item": "pear", "quantity": 2}', "shared": "on"}, headers=HTMX
    )
    case = FailureCase.objects.get()
    assert case.prompt_version == order_version and case.input_variables == {"order": "two pears"}
    assert case.input_text == "" and case.context == [] and case.actual == "pears!"
    assert case.source == "playground" and case.shared is True


def test_a_later_turn_of_a_chat_from_a_version_keeps_the_message_and_the_turns_before(alice, order_version):
    conversation, first = conversation_start_from_prompt(
        owner=alice, prompt_version=order_version, variables={"order": "one fig"}
    )
    Message.objects.filter(pk=first.pk).update(status="complete", content='{"item": "fig"}')
    message_append(conversation=conversation, role="user", content="And the quantity?")
    reply = message_append(conversation=conversation, role="assistant", content="two", status="complete")
    case = services.case_flag(user=alice, message=reply, expected='{"item": "fig", "quantity": 1}')
    assert case.prompt_version == order_version and case.input_text == "And the quantity?"
    assert [m["role"] for m in case.context] == ["user", "assistant"]  # instructions are the version's
    assert case.context[0]["content"] == "Order: one fig"


def test_only_the_owner_of_the_conversation_flags_its_replies(client, bob, chat_with_reply):
    _, reply = chat_with_reply
    client.force_login(bob)
    assert client.get(f"/cases/flag/{reply.pk}/").status_code == 404
    assert client.post(f"/cases/flag/{reply.pk}/", {"expected": "4"}).status_code == 404
    with pytest.raises(services.CasePermissionError):
        services.case_flag(user=bob, message=reply, expected="4")
    assert not FailureCase.objects.exists()


def test_the_expected_answer_is_required(client, alice, chat_with_reply):
    _, reply = chat_with_reply
    client.force_login(alice)
    response = client.post(f"/cases/flag/{reply.pk}/", {"expected": "  "}, headers=HTMX)
    assert response.status_code == 400 and "must not be empty" in response.content.decode()


def test_deleting_a_conversation_deletes_its_private_cases_and_keeps_shared_ones(alice, chat_with_reply):
    conversation, reply = chat_with_reply
    private = services.case_flag(user=alice, message=reply, expected="4")
    shared = services.case_flag(user=alice, message=reply, expected="four", shared=True)
    conversation.delete()
    assert not FailureCase.objects.filter(pk=private.pk).exists()
    kept = FailureCase.objects.get(pk=shared.pk)
    assert kept.source_conversation is None and kept.context[0]["content"] == "Be brief."  # its own copy

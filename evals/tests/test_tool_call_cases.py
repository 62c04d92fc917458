"""Failure cases whose answers are tool calls: flagged from a reply that called a tool, posted to the
API or imported (JSONL, or a CSV cell holding the JSON), all stored as the reply's Hermes text."""

import csv
import io
import json

import pytest

from accounts.services import api_token_create
from chat.models import Conversation
from chat.services import message_append
from evals import importing, services
from evals.models import FailureCase
from studio.llm.tools import call_text

from .conftest import finished_reply

pytestmark = pytest.mark.django_db

PARIS = {"name": "get_weather", "arguments": {"city": "Paris"}}
PARIS_TEXT = call_text("get_weather", {"city": "Paris"})


def test_a_flagged_reply_that_called_a_tool_keeps_its_call_and_takes_a_call_as_expected(alice):
    conversation = Conversation.objects.create(owner=alice, title="Weather")
    message_append(conversation=conversation, role="user", content="Weather in Lyon?")
    reply = finished_reply(conversation, PARIS_TEXT)
    case = services.case_flag(
        user=alice, message=reply, expected=json.dumps({"name": "get_weather", "arguments": {"city": "Lyon"}})
    )
    assert case.actual == PARIS_TEXT
    assert case.expected == call_text("get_weather", {"city": "Lyon"})


def test_the_api_takes_calls_as_expected_and_refuses_a_call_whose_arguments_are_no_object(client, alice):
    token = api_token_create(user=alice, name="ci")[1]

    def post(body):
        return client.post(
            "/api/failure-cases/",
            json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )

    created = post([{"input": "Weather in Paris?", "expected": {"tool_calls": [PARIS]}}])
    assert created.status_code == 201, created.json()
    assert FailureCase.objects.get(pk=created.json()["ids"][0]).expected == PARIS_TEXT
    refused = post([{"input": "x", "expected": "y"}, {"input": "z", "expected": {"name": "f", "arguments": "[1]"}}])
    assert refused.status_code == 400
    assert "[1].expected.arguments: must be a JSON object" in refused.json()["error"]


def imported(alice, filename, content):
    columns, rows = importing.parse_file(filename, content.encode())
    mapping = importing.guess_mapping(columns)
    checked = importing.check_rows(rows, mapping, {"prompt": "-"}, user=alice)
    return checked


def test_a_jsonl_import_takes_calls_in_each_shape(alice):
    openai_message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ],
    }
    lines = [
        {"input": "one", "expected": PARIS},
        {"input": "two", "expected": {"tool_calls": [PARIS]}},
        {"input": "three", "expected": openai_message},
        {"input": "four", "expected": [PARIS, {"name": "get_time", "arguments": {}}]},
        {"input": "five", "expected": "Plain text stays text."},
    ]
    checked = imported(alice, "cases.jsonl", "\n".join(json.dumps(line) for line in lines))
    assert checked["errors"] == []
    cases = importing.import_checked(checked, user=alice, only_valid=False, eval_share=0)
    assert [case.expected for case in cases] == [
        PARIS_TEXT,
        PARIS_TEXT,
        PARIS_TEXT,
        PARIS_TEXT + "\n" + call_text("get_time", {}),
        "Plain text stays text.",
    ]


@pytest.fixture
def csv_content():
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["question", "ideal"])
    writer.writerow(["Weather in Paris?", json.dumps({"tool_calls": [PARIS]})])
    writer.writerow(["What time is it?", json.dumps({"name": "get_time", "arguments": "not json"})])
    writer.writerow(["Say hi", "hi"])
    return buffer.getvalue()


def test_a_csv_import_reads_calls_in_a_cell_and_names_the_row_and_column_of_a_bad_one(alice, csv_content):
    checked = imported(alice, "cases.csv", csv_content)
    assert checked["errors"] == [(2, "ideal", "is not valid JSON")]
    assert [fields["expected"] for _, fields in checked["valid"]] == [PARIS_TEXT, "hi"]

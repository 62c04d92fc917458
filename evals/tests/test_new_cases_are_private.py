"""One default for a new case, stated where it is made: private (only its author sees it) until its
author shares it, whether flagged from a plain chat or a prompt, written by hand, imported or posted
to the API (imported cases were shared while flagged ones were private)."""

import json

import pytest

from accounts.services import api_token_create
from chat.models import Conversation
from chat.services import message_append
from evals import services
from evals.models import NEW_CASE_SHARING_NOTE, FailureCase
from evals.tests.conftest import finished_reply
from evals.tests.test_import_export import csv_text, import_and_run, upload

pytestmark = pytest.mark.django_db
STATED = "New cases are private (only you see them) until you tick “Share with the team”."


def test_the_default_is_stated_on_every_form_that_makes_cases(client, alice, order_version, chat_with_reply):
    assert NEW_CASE_SHARING_NOTE == STATED
    client.force_login(alice)
    _, reply = chat_with_reply
    escaped = STATED.replace("“", "&ldquo;")
    for page in (client.get("/cases/new/"), client.get(f"/cases/flag/{reply.pk}/"), client.get("/cases/import/")):
        text = page.content.decode()
        assert STATED in text or escaped in text, page.request["PATH_INFO"]
        assert 'name="shared" checked' not in text


def test_cases_made_every_way_start_private_unless_shared(client, alice, bob, order_version, chat_with_reply):
    client.force_login(alice)
    _, plain_reply = chat_with_reply
    prompted = Conversation.objects.create(owner=alice, title="Order", prompt_version=order_version)
    message_append(conversation=prompted, role="user", content="Order: 2 figs", variables={"order": "2 figs"})
    prompt_reply = finished_reply(prompted, "figs")
    for reply in (plain_reply, prompt_reply):
        assert client.post(f"/cases/flag/{reply.pk}/", {"expected": "4", "split": "train"}).status_code == 200
    client.post("/cases/new/", {"prompt": "order-json", "var_order": "1 fig", "expected": "x", "split": "train"})
    draft = upload(client, "orders.csv", csv_text([["5 figs", "y"]], ["order", "expected"]))
    import_and_run(
        client,
        draft,
        {"mapped": "1", "fixed_prompt": "order-json", "map_var_order": "order", "map_expected": "expected"},
    )
    token = api_token_create(user=alice, name="ci")[1]
    posted = client.post(
        "/api/failure-cases/",
        json.dumps(
            [
                {"prompt": "order-json", "input": {"order": "6 figs"}, "expected": "z"},
                {"prompt": "order-json", "input": {"order": "7 figs"}, "expected": "z", "shared": True},
            ]
        ),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert posted.status_code == 201
    made = {case.source + ":" + case.input_display: case.shared for case in FailureCase.objects.all()}
    assert made == {
        "chat:What is 2 + 2?": False,
        "chat:order = 2 figs": False,
        "manual:order = 1 fig": False,
        "import:order = 5 figs": False,
        "api:order = 6 figs": False,
        "api:order = 7 figs": True,
    }
    bad = client.post(
        "/api/failure-cases/",
        json.dumps({"prompt": "order-json", "input": {"order": "8"}, "expected": "z", "shared": "yes"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert bad.status_code == 400 and "shared: must be true or false" in bad.json()["error"]


def test_ticking_share_shares_from_each_form(client, alice, order_version, chat_with_reply):
    client.force_login(alice)
    _, reply = chat_with_reply
    client.post(f"/cases/flag/{reply.pk}/", {"expected": "4", "split": "train", "shared": "on"})
    client.post(
        "/cases/new/", {"prompt": "order-json", "var_order": "1 fig", "expected": "x", "split": "train", "shared": "on"}
    )
    draft = upload(client, "orders.csv", csv_text([["5 figs", "y"]], ["order", "expected"]))
    import_and_run(
        client,
        draft,
        {
            "mapped": "1",
            "fixed_prompt": "order-json",
            "map_var_order": "order",
            "map_expected": "expected",
            "shared": "on",
        },
    )
    assert FailureCase.objects.count() == 3 and not FailureCase.objects.filter(shared=False).exists()
    assert services.case_flag  # the service keeps its explicit `shared` for callers that decide

"""GET /api/prompts/<slug>/metrics/: the issue's JSON shape, the window and filters checked (a 400
names the field), and a prompt's traffic seen only by its owner, its editors and staff."""

from datetime import timedelta
from urllib.parse import urlencode

import pytest

from accounts.services import api_token_create

from . import scenario
from .scenario import NOW

pytestmark = pytest.mark.django_db(transaction=True)

UNTIL = NOW.isoformat().replace("+00:00", "Z")
SINCE = (NOW - timedelta(days=7)).isoformat().replace("+00:00", "Z")


@pytest.fixture
def traffic(alice):
    return scenario.build()


def token(user) -> str:
    return api_token_create(user=user, name="monitoring test")[1]


def metrics(client, user, slug="support", **query):
    path = f"/api/prompts/{slug}/metrics/" + (f"?{urlencode(query)}" if query else "")
    return client.get(path, HTTP_AUTHORIZATION=f"Bearer {token(user)}")


def test_it_answers_the_issues_shape(client, alice, traffic):
    answer = metrics(client, alice, since=SINCE, until=UNTIL)
    assert answer.status_code == 200
    body = answer.json()
    figures = {
        "requests", "errors", "latency_ms", "ttft_ms", "tokens", "tokens_per_s", "feedback", "flagged",
        "output_format", "retrieved", "nothing_found", "online_scores",
    }  # fmt: skip
    assert figures | {"since", "until", "bucket", "by_version", "by_label", "by_variant", "by_model", "series"} == set(
        body
    )
    assert set(body["latency_ms"]) == set(body["ttft_ms"]) == {"p50", "p95"}
    assert set(body["tokens"]) == {"prompt", "completion"} and set(body["feedback"]) == {"up", "down"}
    assert body["by_version"][0].keys() == figures | {"version"}
    assert body["series"][0].keys() >= {"t", "requests", "p95_ms", "errors"}
    assert body["requests"] == 21 and body["since"] == "2026-11-30T15:00:00Z" and body["until"] == UNTIL


def test_the_window_defaults_to_the_last_seven_days(client, alice, traffic):
    body = metrics(client, alice).json()
    assert body["bucket"] == "hour" and len(body["series"]) in (168, 169)


def test_filters_narrow_the_figures(client, alice, traffic):
    whole = metrics(client, alice, since=SINCE, until=UNTIL).json()
    for query, expected in [
        ({"version": "2"}, next(row for row in whole["by_version"] if row["version"] == 2)),
        ({"label": "production"}, next(row for row in whole["by_label"] if row["label"] == "production")),
        ({"model": "tuned-1"}, next(row for row in whole["by_model"] if row["model"] == "tuned-1")),
        ({"variant": "candidate"}, whole["by_variant"][0]),
    ]:
        narrowed = metrics(client, alice, since=SINCE, until=UNTIL, **query).json()
        assert narrowed["requests"] == expected["requests"] < whole["requests"], query
        assert narrowed["errors"] == expected["errors"] and narrowed["latency_ms"] == expected["latency_ms"], query


@pytest.mark.parametrize(
    "query, field",
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"since": UNTIL, "until": SINCE}, "since"),
        ({"since": "2025-01-01T00:00:00Z", "until": UNTIL}, "since"),  # over 366 days
        ({"version": "two"}, "version"),
        ({"version": "0"}, "version"),
        ({"label": "x" * 201}, "label"),
    ],
)
def test_a_bad_window_or_filter_is_a_400_naming_the_field(client, alice, query, field):
    scenario.make_prompt(alice)
    answer = metrics(client, alice, **query)
    assert answer.status_code == 400
    assert answer.json()["error"].startswith(f"{field}: ")


def test_a_prompt_is_seen_by_its_owner_editors_and_staff_only(client, alice, bob, carol, traffic):
    prompt, _ = traffic
    assert metrics(client, bob).status_code == 404  # as for a prompt that does not exist
    assert metrics(client, bob, slug="no-such-prompt").status_code == 404
    prompt.editors.add(bob)
    assert metrics(client, bob).status_code == 200
    carol.is_staff = True
    carol.save()
    assert metrics(client, carol).status_code == 200
    assert client.get("/api/prompts/support/metrics/").status_code == 401


def test_it_reads_the_rollups_in_a_fixed_number_of_queries(client, alice, traffic, django_assert_max_num_queries):
    bearer = token(alice)
    # The token's check and its use (2), the prompt and its permission (2), the rollups (3).
    with django_assert_max_num_queries(8):
        answer = client.get(f"/api/prompts/support/metrics/?since={SINCE}", HTTP_AUTHORIZATION=f"Bearer {bearer}")
    assert answer.status_code == 200

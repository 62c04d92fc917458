"""The monitoring page of a prompt: linked from the prompt's page for those who may see it, figure
cards, charts whose points say their figures on hover (<title>), tables per version and label, the
window and filters through htmx (the figures' partial alone)."""

import re

import pytest

from . import scenario

# The scenario's clock is fixed (scenario.NOW): windows are asked by time, not as "the last 30 days".
MONTH = "since=2026-11-07T00:00:00Z&until=2026-12-07T16:00:00Z"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def traffic(alice):
    return scenario.build()


def test_the_prompt_page_links_to_monitoring_for_those_who_may_see_it(client, alice, bob, traffic):
    client.force_login(alice)
    assert 'href="/monitoring/prompts/support/"' in client.get("/prompts/support/").content.decode()
    client.force_login(bob)
    assert "/monitoring/prompts/support/" not in client.get("/prompts/support/").content.decode()
    assert client.get("/monitoring/prompts/support/").status_code == 404


def test_the_page_shows_cards_charts_and_tables(client, alice, traffic):
    client.force_login(alice)
    page = client.get(f"/monitoring/prompts/support/?{MONTH}").content.decode()
    assert "<h1>Monitoring: Support</h1>" in page
    assert re.search(r"<h2>Requests</h2><p class=\"big-number\">22</p>", page)  # the reply of 9 days ago too
    assert "<code>worker_lost</code> 1" in page
    assert page.count("<svg") == 2
    # Every bar and point says its figures when hovered.
    titles = re.findall(r"<title>([^<]*)</title>", page)
    today = [title for title in titles if title.startswith("7 Dec (UTC day) · 21 requests · 4 errors · latency p50 ")]
    assert len(today) == 3, titles  # its bar, its p50 point and its p95 point
    for heading in ("By version", "By label", "By A/B variant", "By model"):
        assert f"<h2>{heading}</h2>" in page
    assert "(none: chats and playground)" in page and "production" in page and "tuned-1" in page
    assert "Online: judge" in page


def test_the_window_and_filters_change_through_htmx(client, alice, traffic):
    client.force_login(alice)
    partial = client.get(f"/monitoring/prompts/support/?{MONTH}&version=2", HTTP_HX_REQUEST="true").content.decode()
    assert partial.startswith('<section id="monitoring-figures"') and "<html" not in partial
    assert re.search(r"<h2>Requests</h2><p class=\"big-number\">5</p>", partial)
    empty = client.get(f"/monitoring/prompts/support/?{MONTH}&model=nobody", HTTP_HX_REQUEST="true").content.decode()
    assert "No production reply in this window with these filters." in empty


def test_a_bad_time_is_said_and_the_default_window_shown(client, alice, traffic):
    client.force_login(alice)
    page = client.get("/monitoring/prompts/support/?since=soon").content.decode()
    assert "since: not an ISO 8601 time" in page and 'role="alert"' in page


def test_anonymous_people_are_sent_to_log_in(client, traffic):
    answer = client.get("/monitoring/prompts/support/")
    assert answer.status_code == 302 and "/login" in answer["Location"]


def test_the_page_reads_in_a_fixed_number_of_queries(client, alice, traffic, django_assert_num_queries):
    client.force_login(alice)
    # The session and its person (2), the prompt (1), the rollups (3), the filters' choices (4), the
    # split's comparison (2: none runs, none ended in the window).
    with django_assert_num_queries(12):
        assert client.get(f"/monitoring/prompts/support/?{MONTH}").status_code == 200

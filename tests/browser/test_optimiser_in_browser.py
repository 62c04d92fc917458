"""The optimiser in Chromium: from a version's page a person opens Optimise, fills the form and
starts; the optimisation page shows progress while its candidates are measured and the
leaderboard with the best when it ends; the best is saved as a new version (which appears on the
prompt), and its evaluation on the held-out split is started from the same page."""

import re

import pytest
from playwright.sync_api import expect

from benchmarks.processes import manage

pytestmark = pytest.mark.browser

# Version 1 carries eight long fixed examples. The tiny model passes no case whatever it reads, so
# every candidate ties at 0 % and the tie goes to the fewest tokens: a candidate with fewer, shorter
# examples (chosen per input, or a fixed set from the cases) is the best, never the version itself,
# and there is something to save.
SETUP = """
from django.contrib.auth.models import User
from evals.services import cases_create
from prompts.services import prompt_create
admin = User.objects.get(username="admin")
long_example = {"input": "Ticket: " + "my order is late and nobody answers the phone, " * 6,
                "output": '{"team": "billing", "urgent": true}'}
prompt_create(owner=admin, name="Ticket triage", slug="ticket-triage", version={
    "instructions": 'Reply with JSON only: {"team": <billing|tech|sales>, "urgent": <true|false>}.',
    "template": "Ticket: {{ ticket }}", "max_new_tokens": 12, "examples": [long_example] * 8,
    "commit_message": "Eight hand-written examples"})
teams = ["billing", "tech", "sales"]
rows = [{"prompt": "ticket-triage", "version": 1, "input": {"ticket": f"ticket number {n} about {teams[n % 3]}"},
         "expected": '{"team": "%s", "urgent": %s}' % (teams[n % 3], "true" if n % 2 else "false"),
         "split": "eval" if n >= 18 else "train"} for n in range(22)]
cases_create(user=admin, source="api", rows=rows)
"""


def test_a_person_optimises_a_version_saves_the_best_and_evaluates_it_on_held_out(page, log_in, studio, screenshot):
    manage(["shell", "-c", SETUP], studio.env)
    log_in()
    page.goto("/prompts/ticket-triage/")
    page.get_by_role("link", name="Optimise").click()
    page.wait_for_url("**/optimisations/new/**")
    expect(page.get_by_label("Version", exact=True)).to_have_value("1")
    page.get_by_label("The prompt's train split").check()
    page.get_by_label("JSON equal").check()
    page.get_by_label("At most").fill("2000")
    page.get_by_label("of", exact=True).select_option("cases")
    screenshot("optimiser-new")
    page.get_by_role("button", name="Start optimising").click()
    page.wait_for_url(re.compile(r".*/optimisations/\d+/$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Ticket triage v1")

    # While it runs: the progress bar, which candidate is being measured (its row marked), the
    # figures of those measured already, and Cancel.
    page.set_viewport_size({"width": 1280, "height": 1300})  # the whole leaderboard in the screenshots
    live = page.locator("#optimisation-live")
    figures = live.locator(".job-progress__figures")
    expect(figures).to_contain_text(re.compile(r"Running\s+·[\s\S]*candidate ([3-9]|1\d) of \d+: "), timeout=300_000)
    expect(live.locator("tbody tr").first).to_contain_text(re.compile(r"the version as it is\s+\d+ %"))
    expect(live.get_by_role("button", name="Cancel")).to_be_visible()
    screenshot("optimiser-running")

    # When it ends: the leaderboard, every candidate measured or saying why not, the best marked.
    expect(live.locator(".job-progress__status")).to_have_text("Finished", timeout=600_000)
    rows = live.locator("tbody tr")
    assert rows.count() >= 5
    expect(live.locator("tbody tr.leaderboard__best")).to_have_count(1)
    expect(live.locator("tbody tr.leaderboard__best")).to_contain_text("best")
    best = live.locator("#optimisation-best")
    expect(best).to_contain_text("check")
    expect(best.get_by_role("heading")).not_to_contain_text("the version as it is")
    expect(live.get_by_role("button", name="Cancel")).to_have_count(0)
    for n in range(rows.count()):  # a figure, or the reason it was not measured
        expect(rows.nth(n).locator("td").nth(6)).to_have_text(re.compile("Scored|Refused|Skipped"))
    screenshot("optimiser-finished")

    page.get_by_role("button", name="Save as new version").click()
    expect(best).to_contain_text("Saved as v2")
    page.get_by_role("button", name="Evaluate on held-out").click()
    held_out = best.get_by_role("link", name=re.compile(r"Held-out evaluation #\d+"))
    expect(held_out).to_be_visible()
    screenshot("optimiser-saved")
    evaluation_url = held_out.get_attribute("href")

    # The saved version is a normal version of the prompt that says how it was found.
    best.get_by_role("link", name="v2").click()
    page.wait_for_url("**/prompts/ticket-triage/versions/2/")
    expect(page.locator(".version__commit")).to_contain_text(re.compile(r"Optimised \(optimisation #\d+\): "))
    page.goto("/prompts/ticket-triage/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("v2")

    # The held-out evaluation runs the saved version on the eval split: its 4 cases.
    page.goto(evaluation_url)
    expect(page.locator(".job-progress__status")).to_have_text("Finished", timeout=120_000)
    expect(page.locator(".job-progress__figures")).to_contain_text("4 of 4")

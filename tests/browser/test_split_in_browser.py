"""An A/B split in Chromium: started on the prompt's page (a refusal shown where it is typed), real
`prompt:<slug>` requests through the OpenAI-compatible API served by both variants, the monitoring
page comparing them side by side at desktop and phone width, and a variant promoted from there."""

import json
import urllib.request

import pytest
from playwright.sync_api import expect

from benchmarks.processes import manage, shell_token

pytestmark = pytest.mark.browser

SETUP = """
from django.contrib.auth.models import User
from accounts.services import api_token_create
from prompts.services import label_move, prompt_create, version_create
admin = User.objects.get(username="admin")
fields = {"instructions": "Answer in one line.", "template": "{{ question }}", "max_new_tokens": 4}
prompt = prompt_create(owner=admin, name="Support triage", slug="support-triage", version=fields)
version_create(prompt=prompt, author=admin, fields={**fields, "instructions": "Answer in one word."})
label_move(prompt=prompt, name="production", version=prompt.versions.get(number=1), user=admin)
label_move(prompt=prompt, name="candidate", version=prompt.versions.get(number=2), user=admin)
print("TOKEN", api_token_create(user=admin, name="ab-test")[1])
"""
# Thumbs on some replies, through the service the chat's buttons call (the rollups follow them).
THUMBS = """
from chat.models import Message
from chat.services import reply_feedback
for n, reply in enumerate(Message.objects.filter(role="assistant").exclude(variant="").order_by("id")):
    reply_feedback(message=reply, value="up" if (n % 3) or reply.variant == "candidate" else "down")
"""


def ask(studio, token: str, end_user: str) -> dict:
    body = {
        "model": "prompt:support-triage",
        "user": end_user,
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "Where is my parcel?"}],
    }
    request = urllib.request.Request(
        f"{studio.base_url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.load(answer)


def test_a_split_is_started_served_compared_and_promoted(page, studio, log_in, screenshot):
    token = shell_token(SETUP, studio.env)
    log_in()
    page.goto("/prompts/support-triage/")
    card = page.locator("#split")
    card.get_by_label("Variant 1: label").select_option("production")
    card.get_by_label("Variant 1: weight").fill("0.5")
    card.get_by_label("Variant 2: label").select_option("candidate")
    card.get_by_label("Variant 2: weight").fill("0.4")
    card.get_by_role("button", name="Start a split").click()
    expect(card.get_by_role("alert")).to_have_text("The weights add up to 0.9; they must add up to 1")
    card.get_by_label("Variant 2: weight").fill("50%")
    card.get_by_role("button", name="Start a split").click()
    expect(card.get_by_role("status")).to_have_text("The split is running.")
    expect(card.locator(".split-variants")).to_contain_text("candidate → v2 · 50%")
    card.scroll_into_view_if_needed()
    screenshot("split-card-desktop")

    served = {}
    for n in range(16):
        answer = ask(studio, token, f"customer-{n}")
        served.setdefault(answer["studio"]["variant"], set()).add(answer["studio"]["version"])
    assert served == {"production": {1}, "candidate": {2}}  # each variant served by its own version
    manage(["shell", "-c", THUMBS], studio.env)

    card.get_by_role("link", name="Compare the variants").click()
    page.wait_for_url("**/monitoring/prompts/support-triage/#split-comparison")
    comparison = page.locator("#split-comparison")
    expect(comparison).to_contain_text("A/B split: production vs candidate")
    rows = comparison.locator("tbody tr")
    expect(rows.filter(has_text="Requests")).to_contain_text("% of the split")
    expect(rows.filter(has_text="Thumbs up")).to_contain_text("pts (95 %:")
    expect(rows.filter(has_text="Latency p95")).to_contain_text("ms")
    screenshot("split-comparison-desktop")

    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    expect(comparison).to_contain_text("A/B split: production vs candidate")
    # The page fits the phone; the comparison's table scrolls inside its own box.
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 390
    comparison.scroll_into_view_if_needed()
    screenshot("split-comparison-phone")

    page.once("dialog", lambda dialog: dialog.accept())
    comparison.get_by_role("button", name="Promote candidate").click()
    promoted = page.locator("#split")
    expect(promoted.get_by_role("status")).to_have_text(
        "Promoted candidate: production now points at v2; the split ended."
    )
    promoted.scroll_into_view_if_needed()
    screenshot("split-promoted-phone")
    page.goto("/prompts/support-triage/")
    expect(page.locator("#labels")).to_contain_text("production → v2")

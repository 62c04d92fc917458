"""The review queue in Chromium: real `prompt:<slug>` requests through the OpenAI-compatible API,
two given a thumbs down and one scored low by an online rule (the queue's receivers in the studio's
own processes), then reviewed on /review/: a correction saved as a failure case, the next item
marked fine, a refusal shown in the item; at desktop and phone width."""

import json
import os
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from benchmarks.processes import manage, shell_token

from .conftest import ADMIN_PASSWORD

pytestmark = pytest.mark.browser

SETUP = """
from django.contrib.auth.models import User
from accounts.services import api_token_create
from prompts.services import prompt_create
admin = User.objects.get(username="admin")
User.objects.create_user("dave", password="dave-password-1")
fields = {"instructions": "Answer the customer in one line.", "template": "Question: {{ question }}", "max_new_tokens": 6}
prompt_create(owner=admin, name="Support desk", slug="support-desk", version=fields)
print("TOKEN", api_token_create(user=admin, name="review-test")[1])
"""
# Two thumbs down through the service the chat's buttons call, one low score as online evaluation
# sends it: the queue's receivers land them.
LAND = """
from chat.models import Message
from chat.services import reply_feedback
from online.signals import reply_scored
replies = list(Message.objects.filter(role="assistant", conversation__kind="api").order_by("id"))
reply_feedback(message=replies[0], value="down")
reply_feedback(message=replies[1], value="down")
reply_scored.send(sender=None, message_id=replies[2].pk, rule_id=1, scores={"llm_judge": 0.1}, below_threshold=True)
"""
QUESTIONS = ("Where is my parcel?", "Can I return shoes?", "Do you ship to Norway?")


def ask(studio, token: str, question: str) -> dict:
    body = {"model": "prompt:support-desk", "max_tokens": 6, "messages": [{"role": "user", "content": question}]}
    request = urllib.request.Request(
        f"{studio.base_url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.load(answer)


def test_replies_are_reviewed_on_the_queue_page(page, studio, log_in, screenshot, chromium):
    token = shell_token(SETUP, studio.env)
    for question in QUESTIONS:
        ask(studio, token, question)
    manage(["shell", "-c", LAND], studio.env)

    log_in()
    page.goto("/review/?prompt=support-desk")
    expect(page.locator("#review-counts")).to_have_text("3 open · 0 corrected · 0 fine · 0 skipped")
    item = page.locator("#review-item")
    expect(item).to_contain_text("Its reader gave it a thumbs down.")
    expect(item).to_contain_text("Where is my parcel?")
    expect(item).to_contain_text("Answer the customer in one line.")
    screenshot("review-queue-desktop")

    item.get_by_role("button", name="Save as failure case").click()  # empty: the browser asks for it
    expect(item.get_by_role("status")).to_have_count(0)
    item.get_by_label("Expected answer").fill("Your parcel ships tomorrow; the tracking link is in your email.")
    item.get_by_role("button", name="Save as failure case").click()
    expect(item.get_by_role("status")).to_contain_text("Saved as failure case #")
    item.get_by_role("link", name="Next item →").click()
    expect(item).to_contain_text("Can I return shoes?")
    item.get_by_role("button", name="Fine").click()
    expect(item.get_by_role("status")).to_contain_text("Marked fine.")
    item.get_by_role("link", name="Next item →").click()
    expect(item).to_contain_text("An online evaluation rule scored it below its threshold.")
    expect(item).to_contain_text("llm_judge")
    item.get_by_label("Assign to").fill("dave")
    item.get_by_role("button", name="Assign").click()
    expect(item.get_by_role("alert")).to_contain_text("dave may not review “support-desk”")
    screenshot("review-queue-item-refusal")

    phone = chromium.new_context(
        base_url=studio.base_url, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    ).new_page()
    phone.goto("/accounts/login/")
    phone.get_by_label("User name").fill("admin")
    phone.get_by_label("Password").fill(ADMIN_PASSWORD)
    phone.get_by_role("button", name="Log in").click()
    phone.wait_for_url("**/chat/")
    phone.goto("/review/?prompt=support-desk&status=all")
    expect(phone.locator("#review-item")).to_be_visible()
    phone.wait_for_load_state("networkidle")
    width = phone.evaluate("() => document.documentElement.scrollWidth")
    if os.environ.get("STUDIO_SCREENSHOTS"):
        phone.screenshot(path=str(Path(os.environ["STUDIO_SCREENSHOTS"]) / "review-queue-phone.png"), full_page=True)
    phone.context.close()
    assert width <= 390, f"the review queue lays out {width} px wide on a phone"

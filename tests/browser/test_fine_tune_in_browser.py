"""Fine-tuning in Chromium: staff launches a job, watches the loss chart grow, the job finishes,
the new model appears in the chat's model picker."""

import re

import pytest
from playwright.sync_api import expect

from benchmarks.processes import manage

pytestmark = pytest.mark.browser

SETUP = """
from django.contrib.auth.models import User
from evals.services import cases_create
from prompts.services import prompt_create
admin = User.objects.get(username="admin")
prompt_create(owner=admin, name="City pairs", slug="city-pairs", version={
    "instructions": "Reply with JSON only.", "template": "Trip: {{ trip }}", "max_new_tokens": 8})
cases_create(user=admin, source="api", rows=[
    {"prompt": "city-pairs", "input": {"trip": f"from town {n} to town {n + 1}"},
     "expected": '{"from": "town %d", "to": "town %d"}' % (n, n + 1)} for n in range(24)])
"""


def test_staff_launch_a_fine_tune_watch_the_loss_and_pick_the_model_in_chat(page, log_in, studio, screenshot):
    manage(["shell", "-c", SETUP], studio.env)
    log_in()
    page.get_by_role("link", name="Fine-tune").click()
    page.get_by_role("link", name="New fine-tune").click()
    page.get_by_label("Prompt (its failure cases)").select_option("city-pairs")
    expect(page.locator("#plan")).to_contain_text("24 examples")
    expect(page.locator("#plan")).to_contain_text("as the model sees them")
    expect(page.locator("#plan .alert--warn")).to_contain_text("fine-tuning usually pays off")
    page.get_by_label("Name of the new model").fill("city-pairs-v1")
    page.get_by_label("Epochs").fill("6")
    page.get_by_label("Max length").fill("64")
    page.get_by_label("LoRA rank").fill("4")
    screenshot("fine-tune-new")
    page.get_by_role("button", name="Launch fine-tune").click()
    page.wait_for_url(re.compile(r".*/fine-tunes/\d+/$"))

    chart = page.locator(".loss-chart__train")
    expect(chart).to_be_attached(timeout=60_000)
    first_points = chart.get_attribute("points")
    expect(page.locator(".job-progress__status")).to_have_text("Finished", timeout=180_000)
    assert len(page.locator(".loss-chart__train").get_attribute("points")) > len(first_points)  # it grew
    expect(page.locator("#job-live")).to_contain_text("city-pairs-v1 is now a model in chat")
    screenshot("fine-tune-done")

    page.goto("/chat/")
    page.get_by_role("button", name="New chat", exact=True).click()
    picker = page.get_by_label("Model")
    expect(picker.locator("option", has_text="city-pairs-v1")).to_have_count(1)
    with page.expect_response("**/model/"):
        picker.select_option("city-pairs-v1")  # saved by htmx: the choice sticks to the conversation
    page.reload()
    expect(page.get_by_label("Model")).to_have_value("city-pairs-v1")
    page.get_by_label("Message").fill("Trip: from town 3 to town 4")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".message--assistant .message__meta")).to_contain_text("city-pairs-v1", timeout=60_000)
    screenshot("chat-fine-tuned")

"""At phone width (390 × 844) nothing is wider than the screen and the navigation folds into a
menu; the import form keeps what the person entered when an import is refused; the chat tells
what happens to a message sent while a reply is written."""

import re

import pytest
from playwright.sync_api import expect

from benchmarks.processes import manage
from tests.browser.conftest import ADMIN_PASSWORD

pytestmark = pytest.mark.browser

SETUP = """
from django.contrib.auth.models import User
from chat.models import Conversation, Message
from evals.models import Evaluation, EvaluationResult
from evals.services import cases_create
from prompts.services import prompt_create
from studio.jobs import JobStatus
from chat.services import message_append
admin = User.objects.get(username="admin")
if not Conversation.objects.filter(title__startswith="A long conversation title").exists():
    prompt = prompt_create(owner=admin, name="Order JSON", slug="order-json", version={
        "instructions": "Reply with JSON only.", "template": "Order: {{ order }}", "max_new_tokens": 8})
    for n in range(6):
        chat = Conversation.objects.create(owner=admin, title=f"A long conversation title number {n} about orders")
        message_append(conversation=chat, role="user", content="Where is my order of " + "pears " * 40)
        message_append(conversation=chat, role="assistant", content="It is on its way. " * 20)
    cases = cases_create(user=admin, source="api", rows=[
        {"prompt": "order-json", "input": {"order": f"{n} pears and a very long description " + "x" * 60},
         "actual": "pears " * 30, "expected": '{"item": "pear", "quantity": %d, "note": "%s"}' % (n, "y" * 80),
         "tags": ["phone-width"]} for n in range(12)])
    version = prompt.versions.get()
    for run in range(2):
        evaluation = Evaluation.objects.create(prompt_version=version, model_name="SmolLM2-135M-Instruct",
            created_by=admin, scorers=[{"type": "json_equal", "threshold": 1.0}], status=JobStatus.FINISHED,
            total=len(cases), done=len(cases), passed=run * 3, case_ids=[c.pk for c in cases])
        for n, case in enumerate(cases):
            EvaluationResult.objects.create(evaluation=evaluation, case=case, output="pears " * 40,
                                            scores={"json_equal": 0.0}, passed=run == 1 and n < 3)
print("IDS", *Evaluation.objects.order_by("id").values_list("id", flat=True)[:2],
      Conversation.objects.filter(title__startswith="A long").first().pk)
"""

NO_WIDER_THAN_THE_SCREEN = "() => document.documentElement.scrollWidth"


@pytest.fixture
def phone(chromium, studio):
    context = chromium.new_context(
        base_url=studio.base_url,
        viewport={"width": 390, "height": 844},
        device_scale_factor=1,
        is_mobile=True,
        has_touch=True,
    )
    context.set_default_timeout(60_000)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text
            else None
        ),
    )
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def phone_screenshot(page, name):
    import os
    from pathlib import Path

    folder = os.environ.get("STUDIO_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_chat_cases_an_evaluation_and_the_comparison_fit_a_phone(phone, studio):
    first, second, chat = manage(["shell", "-c", SETUP], studio.env).split("IDS")[1].split()
    phone.goto("/accounts/login/")
    phone.get_by_label("User name").fill("admin")
    phone.get_by_label("Password").fill(ADMIN_PASSWORD)
    phone.get_by_role("button", name="Log in").click()
    phone.wait_for_url("**/chat/")
    for name, path in (
        ("chat", f"/chat/{chat}/"),
        ("cases", "/cases/"),
        ("evaluation", f"/evaluations/{first}/"),
        ("comparison", f"/evaluations/compare/?a={first}&b={second}"),
    ):
        phone.goto(path)
        phone.wait_for_load_state("networkidle")
        width = phone.evaluate(NO_WIDER_THAN_THE_SCREEN)
        phone_screenshot(phone, f"phone-{name}")
        assert width <= 390, f"{name} lays out {width} px wide"
    # The navigation is a menu: every destination, Log out included, is within reach.
    phone.goto("/cases/")
    menu = phone.get_by_role("button", name="Menu")
    expect(menu).to_be_visible()
    expect(phone.get_by_role("link", name="Settings")).to_be_hidden()
    menu.click()
    for name in ("Chat", "Prompts", "Failure cases", "Evaluations", "Settings", "Admin"):
        expect(phone.locator("#topbar-nav").get_by_role("link", name=name, exact=True)).to_be_visible()
    expect(phone.get_by_role("button", name=re.compile("Log out"))).to_be_visible()
    phone_screenshot(phone, "phone-menu")


def test_a_refused_import_keeps_the_choices_and_says_what_was_imported(page, log_in, studio, tmp_path, screenshot):
    manage(["shell", "-c", SETUP], studio.env)
    log_in()
    upload = tmp_path / "orders.csv"
    upload.write_text("order,gold\n2 figs,figs\n3 kiwis,\n4 plums,plums\n")
    page.goto("/cases/import/")
    page.set_input_files("input[type=file]", str(upload))
    page.get_by_role("button", name=re.compile("Upload")).click()
    page.wait_for_url(re.compile(r"/cases/import/\d+/$"))
    expect(page.locator("#import-preview")).to_contain_text("Choose the prompt these cases belong to")
    page.get_by_label("Every row's prompt").select_option("order-json")
    page.wait_for_load_state("networkidle")
    page.locator("#map-expected").select_option("gold")
    expect(page.locator("#import-preview")).to_contain_text("2 ready")
    page.get_by_label("Held-out share for the eval split (%)").fill("25")
    page.get_by_role("button", name=re.compile("Check all 3 rows and import")).click()
    expect(page.locator("#import-preview")).to_contain_text("Nothing was imported: 1 row has errors", timeout=120_000)
    expect(page.get_by_label("Held-out share for the eval split (%)")).to_have_value("25")
    expect(page.locator("#map-expected")).to_have_value("gold")
    page.locator("#import-job").scroll_into_view_if_needed()
    screenshot("import-refused")
    page.get_by_label(re.compile("Import only the valid rows")).check()
    page.get_by_role("button", name=re.compile("Check all 3 rows and import")).click()
    expect(page.locator("#import-preview")).to_contain_text(
        "2 cases imported · 0 skipped as duplicates · 1 row refused", timeout=120_000
    )
    page.locator("#import-job").scroll_into_view_if_needed()
    screenshot("import-done")


def test_enter_while_a_reply_is_written_says_the_text_waits_then_sends_it(page, log_in):
    log_in()
    page.get_by_role("button", name="New chat", exact=True).click()
    page.wait_for_url(re.compile(r"/chat/\d+/$"))
    expect(page.locator("#connection")).to_have_text("Connected")
    box = page.get_by_label("Message")
    box.fill("First, a long answer please")
    box.press("Enter")
    expect(page.locator('#messages [data-role="assistant"]')).to_have_count(1)
    streaming = '#messages [data-status="streaming"]'
    page.wait_for_selector(streaming, timeout=60_000)
    page.wait_for_function(
        "() => { const m = document.getElementById('messages'); "
        "return m.scrollHeight > m.clientHeight + 200 || !m.querySelector('[data-status=streaming]'); }",
        timeout=60_000,
    )
    scrolled_up = page.evaluate(
        "() => { const m = document.getElementById('messages'); m.scrollTop = 0; "
        "return m.scrollHeight > m.clientHeight + 200; }"
    )
    if scrolled_up and page.locator(streaming).count():  # new text below while scrolled up: a way back down
        expect(page.locator("#jump-to-latest")).to_be_visible()
    box.fill("and then this")
    box.press("Enter")
    hint = page.locator("#composer-hint")
    if page.locator('#messages [data-status="queued"], #messages [data-status="streaming"]').count():
        expect(hint).to_contain_text("Sends when the reply ends")
    expect(page.locator('#messages [data-role="user"]')).to_have_count(2, timeout=120_000)
    expect(page.locator('#messages [data-role="user"]').last).to_contain_text("and then this")
    expect(hint).to_be_hidden()

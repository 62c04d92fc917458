"""The chat owns the window, on a phone (390 × 844) and on a laptop (1280 × 800): a one-line header
(title, model, Controls, ⋯), the rest in a sheet, a menu and a drawer, every control still in
reach; the knowledge pages fit a phone; no page shows template syntax; and the small things a new
user saw: "Jump to latest" only while scrolled up, the sampling heading's values, citation chips
that stay put, no closing fence while a code block streams, Attach… filled as it opens."""

import json
import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from benchmarks.processes import manage
from tests.browser.conftest import ADMIN_PASSWORD

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1280, "height": 800}

SETUP = r"""
import json
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from chat.models import Conversation
from chat.services import conversation_attach, message_append
from evals.models import Evaluation, EvaluationResult, FailureCase, ImportDraft
from evals.services import cases_create
from finetune.models import FineTuneJob
from knowledge.models import KnowledgeBase
from knowledge.services import documents_add, knowledge_base_create
from prompts.services import prompt_create, version_create
from studio.jobs import JobStatus
admin = User.objects.get(username="admin")
if not Conversation.objects.filter(title="Layout: a long chat").exists():
    prompt = prompt_create(owner=admin, name="Layout orders", slug="layout-orders", version={
        "instructions": "Reply with JSON only.", "template": "Order: {{ order }}", "max_new_tokens": 64})
    first = prompt.versions.get()
    second = version_create(prompt=prompt, author=admin, fields={**first.editable_fields(),
        "instructions": "Reply with JSON only, on one line.", "commit_message": "One line"})
    base = knowledge_base_create(owner=admin, name="Kettle manual", description="The Lumo kettle")
    manual = ("# Lumo kettle\n\nThe indicator ring glows amber while the kettle descales.\n\nSee "
              "https://example.com/a/very/long/address/that/never/breaks/anywhere/in/the/middle/of/a/phone/screen"
              "\n\n| part | number | note |\n| --- | --- | --- |\n| lid | ZX-4411-LID-REPLACEMENT-PART | spare |\n\n"
              "```\nkettle --descale --temperature=95 --ring=amber --repeat-every-thirty-days --quiet\n```\n")
    documents_add(user=admin, knowledge_base=base, files=[SimpleUploadedFile("kettle.md", manual.encode(), "text/markdown")])
    chat = Conversation.objects.create(owner=admin, title="Layout: a long chat",
                                       parameters={"temperature": 0.2, "top_p": 0.9, "max_new_tokens": 256})
    conversation_attach(conversation=chat, kind="knowledge_base", item_id=base.pk)
    sources = [{"n": n, "chunk": 1000 + n, "document": name, "page": page, "heading": "", "score": 0.5,
                "text": f"Passage {n} of {name}: the ring glows amber while it descales."}
               for n, (name, page) in enumerate([("kettle.md", None), ("warranty-and-returns.pdf", 3),
                                                 ("descaling.md", None), ("safety-notes.docx", None)], 1)]
    for n in range(8):
        message_append(conversation=chat, role="user", content=f"Question {n}: where is my order of pears?")
        message_append(conversation=chat, role="assistant", status="complete", model_name="tiny",
                       content=f"Answer {n}: it is on its way.\n\n- packed\n- shipped\n\n```python\nprint({n})\n```",
                       **({"retrieval": {"searched": ["Kettle manual"], "sources": sources}} if n == 7 else {}))
    from_prompt = Conversation.objects.create(owner=admin, title="Layout: from a prompt", prompt_version=second,
        system_prompt=second.instructions, prompt_variables={"order": "3 pears and a fig"})
    for n in range(8):
        message_append(conversation=from_prompt, role="user", content=f"Order: {n} pears")
        message_append(conversation=from_prompt, role="assistant", status="complete", model_name="tiny",
                       content=f'{{"item": "pear", "quantity": {n}}} and a longer sentence that wraps on a phone.')
    cases = cases_create(user=admin, source="api", rows=[
        {"prompt": "layout-orders", "input": {"order": f"{n} pears"}, "actual": "pears",
         "expected": '{"item": "pear", "quantity": %d}' % n, "tags": ["layout"]} for n in range(4)])
    for run in range(2):
        evaluation = Evaluation.objects.create(prompt_version=second, model_name="tiny", created_by=admin,
            scorers=[{"type": "json_equal", "threshold": 1.0}], status=JobStatus.FINISHED,
            total=len(cases), done=len(cases), passed=run, case_ids=[c.pk for c in cases])
        for n, case in enumerate(cases):
            EvaluationResult.objects.create(evaluation=evaluation, case=case, output="pears",
                                            scores={"json_equal": 0.0}, passed=run == 1 and n < 1)
    FineTuneJob.objects.create(name="layout-orders-lora", base_model="tiny", prompt=prompt, created_by=admin,
        status=JobStatus.FINISHED, total=10, done=10,
        metrics=[{"step": s, "loss": 2.0 - s / 10, "epoch": s / 10} for s in range(1, 11)])
    ImportDraft.objects.create(owner=admin, filename="orders.csv", columns=["order", "gold"],
                               rows=[["2 figs", "figs"], ["3 kiwis", ""]])
base = KnowledgeBase.objects.get(name="Kettle manual")
print("IDS" + json.dumps({
    "chat": Conversation.objects.get(title="Layout: a long chat").pk,
    "from_prompt": Conversation.objects.get(title="Layout: from a prompt").pk,
    "case": FailureCase.objects.filter(tags__name="layout").order_by("pk").first().pk,
    "evaluations": list(Evaluation.objects.filter(prompt_version__prompt__slug="layout-orders")
                        .order_by("pk").values_list("pk", flat=True)[:2]),
    "job": FineTuneJob.objects.get(name="layout-orders-lora").pk,
    "draft": ImportDraft.objects.filter(owner=admin, filename="orders.csv").order_by("pk").last().pk,
    "base": base.pk, "document": base.documents.get().pk}))
"""

# The text a person reads: visible text nodes, leaving out code, preformatted text, text areas and a
# diff's cells, where people write template syntax themselves (prompt templates).
TEMPLATE_SYNTAX_SHOWN = r"""() => {
  const found = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const parent = walker.currentNode.parentElement;
    if (!parent || parent.closest("pre, code, textarea, script, style, template, .diff__cell")) continue;
    if (!parent.checkVisibility({visibilityProperty: true})) continue;
    const text = walker.currentNode.data;
    if (/\{#|#\}|\{%|%\}|\{\{|\}\}/.test(text)) found.push(text.trim().slice(0, 120));
  }
  return found;
}"""
MESSAGES_SHARE = "() => document.getElementById('messages').getBoundingClientRect().height / window.innerHeight"
PAGE_WIDTH = "() => document.documentElement.scrollWidth"


@pytest.fixture(scope="module")
def ids(studio):
    return json.loads(manage(["shell", "-c", SETUP], studio.env).split("IDS")[1])


def open_browser(chromium, studio, size):
    phone = size == PHONE
    context = chromium.new_context(
        base_url=studio.base_url, viewport=size, device_scale_factor=1, is_mobile=phone, has_touch=phone
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
    page.goto("/accounts/login/")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/chat/")
    return context, page, errors


@pytest.fixture(params=[PHONE, LAPTOP], ids=["phone", "laptop"])
def window(request, chromium, studio):
    context, page, errors = open_browser(chromium, studio, request.param)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def phone(chromium, studio):
    context, page, errors = open_browser(chromium, studio, PHONE)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def is_phone(page) -> bool:
    return page.viewport_size["width"] < 640


def save(page, name):
    folder = os.environ.get("STUDIO_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"layout-{name}.png"))


def open_chat(page, conversation_id):
    page.goto(f"/chat/{conversation_id}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    page.wait_for_load_state("networkidle")


def test_the_messages_own_the_window_with_and_without_a_prompt_banner(window, ids):
    least = 0.45 if is_phone(window) else 0.5
    size = "phone" if is_phone(window) else "laptop"
    for name in ("chat", "from_prompt"):
        open_chat(window, ids[name])
        if name == "from_prompt":
            expect(window.locator(".prompt-origin")).to_contain_text("Layout orders v2")
        share = window.evaluate(MESSAGES_SHARE)
        save(window, f"{size}-{name}")
        assert share >= least, f"{name}: the messages get {share:.0%} of the window"
        assert window.evaluate(PAGE_WIDTH) <= window.viewport_size["width"]
        # The controls open over the chat: the messages keep their height (Sampling once left 240 px).
        before = window.locator("#messages").bounding_box()["height"]
        window.locator("#chat-controls > summary").click()
        window.locator("#sampling-panel > summary").click()
        expect(window.locator("#sampling")).to_be_visible()
        save(window, f"{size}-{name}-controls")
        assert window.locator("#messages").bounding_box()["height"] == pytest.approx(before, abs=1)
        window.keyboard.press("Escape")
        expect(window.locator(".sheet")).to_be_hidden()


def test_every_control_is_in_reach_through_the_header(window, ids):
    open_chat(window, ids["chat"])
    header = window.locator(".chat__header")
    expect(header.get_by_label("Conversation title")).to_be_visible()
    expect(header.get_by_label("Model")).to_be_visible()
    assert header.bounding_box()["height"] <= 60  # one line
    # ⋯: export, pin, archive, the shortcuts and delete.
    window.locator("#chat-menu > summary").click()
    menu = window.locator("#chat-menu .menu")
    for name in ("JSON (every branch)", "Markdown (this branch)"):
        expect(menu.get_by_role("link", name=name)).to_be_visible()
    for name in ("Pin", "Archive", "Keyboard shortcuts", "Delete"):
        expect(menu.get_by_role("button", name=name, exact=True)).to_be_visible()
    assert window.evaluate(PAGE_WIDTH) <= window.viewport_size["width"]
    save(window, f"{'phone' if is_phone(window) else 'laptop'}-menu")
    menu.get_by_role("button", name="Keyboard shortcuts").click()
    expect(window.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
    expect(menu).to_be_hidden()  # the chosen item closed the menu
    window.keyboard.press("Escape")
    # A click outside closes the menu, as menus close.
    window.locator("#chat-menu > summary").click()
    expect(menu).to_be_visible()
    window.mouse.click(window.viewport_size["width"] // 2, window.viewport_size["height"] // 2)
    expect(menu).to_be_hidden()
    # Controls: the knowledge attached, the system prompt, sampling.
    window.locator("#chat-controls > summary").click()
    sheet = window.locator(".sheet")
    expect(sheet.locator("#knowledge-panel")).to_contain_text("Kettle manual")
    expect(sheet.get_by_role("button", name="Detach Kettle manual")).to_be_visible()
    expect(sheet.locator(".knowledge-panel__attach > summary")).to_be_visible()
    expect(sheet.get_by_label("System prompt")).to_be_visible()
    sheet.locator("#sampling-panel > summary").click()
    expect(sheet.get_by_label("Temperature")).to_be_visible()
    box = sheet.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= window.viewport_size["width"] + 1
    sheet.get_by_role("button", name="Close the chat controls").click()
    expect(sheet).to_be_hidden()
    # The knowledge attached shows above the message box; a click there opens the controls.
    strip = window.locator("#attached-knowledge")
    expect(strip).to_contain_text("Kettle manual")
    strip.click()
    expect(sheet).to_be_visible()
    window.keyboard.press("Escape")
    # The conversations: beside the chat on a laptop, behind ☰ on a phone.
    sidebar = window.locator("#sidebar")
    if is_phone(window):
        expect(sidebar.get_by_role("button", name="New chat")).to_be_hidden()
        window.get_by_role("button", name="Conversations").click()
        window.wait_for_function("() => getComputedStyle(document.getElementById('sidebar')).transform === 'none'")
        save(window, "phone-drawer")
        window.keyboard.press("Escape")
        expect(sidebar.get_by_role("button", name="New chat")).to_be_hidden()
        window.keyboard.press("Control+k")  # a narrow window with a keyboard: the drawer opens on its box
        expect(sidebar.get_by_label("Search conversations")).to_be_focused()
        window.keyboard.press("Escape")
        window.get_by_role("button", name="Conversations").click()
    expect(sidebar.get_by_role("button", name="New chat")).to_be_visible()
    expect(sidebar.get_by_label("Search conversations")).to_be_visible()
    expect(sidebar.get_by_role("link", name="Layout: from a prompt")).to_be_visible()
    sidebar.get_by_role("link", name="Layout: from a prompt").click()
    window.wait_for_url(f"**/chat/{ids['from_prompt']}/")


def test_the_knowledge_pages_fit_a_phone(phone, ids):
    base, document = ids["base"], ids["document"]
    phone.goto(f"/knowledge/{base}/")
    # The job worker loads the embedder for the first document: minutes on a busy machine.
    expect(phone.locator('#documents tr[data-status="ready"]')).to_have_count(1, timeout=180_000)
    for name, path in (
        ("knowledge-list", "/knowledge/"),
        ("knowledge-base", f"/knowledge/{base}/"),
        ("knowledge-document", f"/knowledge/{base}/documents/{document}/"),
    ):
        phone.goto(path)
        phone.wait_for_load_state("networkidle")
        save(phone, f"phone-{name}")
        width = phone.evaluate(PAGE_WIDTH)
        assert width <= 390, f"{name} lays out {width} px wide: " + str(
            phone.evaluate("""() =>
            [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 391)
            .slice(0, 6).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))""")
        )
    expect(phone.locator(".knowledge-chunks")).to_contain_text("glows amber")


def test_no_page_shows_template_syntax(window, ids):
    first, second = ids["evaluations"]
    base = ids["base"]
    pages = [
        "/chat/",
        f"/chat/{ids['chat']}/",
        f"/chat/{ids['from_prompt']}/",
        "/chat/search/?q=pears",
        "/chat/import/",
        "/prompts/",
        "/prompts/new/",
        "/prompts/layout-orders/",
        "/prompts/layout-orders/playground/",
        "/prompts/layout-orders/versions/new/",
        "/prompts/layout-orders/diff/?from=1&to=2",
        "/cases/",
        f"/cases/{ids['case']}/",
        "/cases/import/",
        f"/cases/import/{ids['draft']}/",
        "/evaluations/",
        f"/evaluations/{first}/",
        f"/evaluations/compare/?a={first}&b={second}",
        "/fine-tunes/",
        f"/fine-tunes/{ids['job']}/",
        "/knowledge/",
        f"/knowledge/{base}/",
        f"/knowledge/{base}/documents/{ids['document']}/",
        "/accounts/settings/",
        "/no-such-page/",
    ]
    shown = {}
    for path in pages:
        window.goto(path)
        window.wait_for_load_state("networkidle")
        if path == f"/chat/{ids['chat']}/":  # what only shows once opened
            window.locator("#chat-controls > summary").click()
            window.locator("#sampling-panel > summary").click()
            expect(window.locator("#sampling")).to_be_visible()
        assert len(window.evaluate("document.body.innerText")) > 40, path
        shown[path] = window.evaluate(TEMPLATE_SYNTAX_SHOWN)
    window.context.clear_cookies()
    window.goto("/accounts/login/")
    shown["login"] = window.evaluate(TEMPLATE_SYNTAX_SHOWN)
    assert not any(shown.values()), {path: text for path, text in shown.items() if text}


def test_jump_to_latest_shows_only_while_scrolled_up(phone, ids):
    open_chat(phone, ids["chat"])
    jump = phone.locator("#jump-to-latest")
    at_bottom = "() => { const m = document.getElementById('messages'); return m.scrollHeight - m.scrollTop - m.clientHeight < 2; }"
    phone.wait_for_function(at_bottom)
    expect(jump).to_be_hidden()
    phone.locator("#messages").evaluate("m => { m.scrollTop = 0; }")
    expect(jump).to_be_visible()
    save(phone, "phone-jump")
    jump.click()
    phone.wait_for_function(at_bottom)
    expect(jump).to_be_hidden()
    # Scrolled up, then the window grows until everything fits: nothing is below any more.
    phone.locator("#messages").evaluate("m => { m.scrollTop = 0; }")
    expect(jump).to_be_visible()
    phone.set_viewport_size({"width": 390, "height": 6000})
    expect(jump).to_be_hidden()


def test_the_sampling_heading_shows_the_values_in_effect(phone, ids):
    open_chat(phone, ids["chat"])
    phone.locator("#chat-controls > summary").click()
    expect(phone.locator("#sampling-summary")).to_have_text("Sampling · T 0.2 · top-p 0.9 · 256 tokens")
    open_chat(phone, ids["from_prompt"])  # the prompt's maximum tokens, the studio's temperature (0 here)
    expect(phone.locator("#sampling-summary")).to_have_text(re.compile(r"^Sampling · T 0 · top-p [\d.]+ · 64 tokens$"))


def test_opening_a_citation_leaves_the_chips_where_they_are(window, ids):
    open_chat(window, ids["chat"])
    sources = window.locator(".sources")
    chips = sources.locator("summary.chip--citation")
    expect(chips).to_have_count(4)
    sources.scroll_into_view_if_needed()
    before = [chips.nth(n).bounding_box() for n in range(4)]
    chips.nth(0).click()
    passage = sources.locator(".citation__passage").nth(0)
    expect(passage).to_be_visible()
    expect(passage).to_contain_text("Passage 1 of kettle.md")
    after = [chips.nth(n).bounding_box() for n in range(4)]
    assert after == before, (before, after)
    box = passage.bounding_box()
    assert box["y"] >= max(chip["y"] + chip["height"] for chip in after) - 1  # under the whole row
    assert box["width"] == pytest.approx(sources.bounding_box()["width"], abs=2)
    save(window, f"{'phone' if is_phone(window) else 'laptop'}-citation")
    chips.nth(2).click()  # one passage open at a time
    expect(sources.locator(".citation__passage").nth(2)).to_be_visible()
    expect(passage).to_be_hidden()
    assert [chips.nth(n).bounding_box() for n in range(4)] == before


def test_a_closing_fence_is_never_shown_while_a_code_block_streams(phone, ids):
    # The chat's socket is played by the test: the page's own script streams these frames.
    sockets = []
    phone.route_web_socket(re.compile(r".*/ws/chat/\d+/$"), lambda socket: sockets.append(socket))
    phone.goto(f"/chat/{ids['from_prompt']}/")
    expect(phone.locator("#connection")).to_have_attribute("data-state", "open")
    socket = sockets[-1]
    socket.send(
        json.dumps(
            {
                "type": "message",
                "message": {
                    "id": 999_001,
                    "role": "assistant",
                    "content": "",
                    "status": "streaming",
                    "parent": None,
                    "siblings": [999_001],
                },
            }
        )
    )
    reply = phone.locator("#message-999001")
    code = reply.locator(".message__tail .code-block pre")
    for text, shown in (
        ("```python\nprint(1)\n", "print(1)"),
        ("`", "print(1)"),
        ("``", "print(1)"),
        ("\n", "print(1)"),
    ):
        socket.send(json.dumps({"type": "token", "message_id": 999_001, "text": text}))
        expect(code).to_have_text(shown)
    socket.send(json.dumps({"type": "token", "message_id": 999_001, "text": "\nThat prints one."}))
    expect(code).to_have_text("print(1)")
    expect(reply.locator(".message__after-code")).to_have_text("That prints one.")
    expect(reply.locator(".message__tail .code-block__lang")).to_have_text("python")


def test_attach_lists_the_knowledge_as_soon_as_it_opens(phone, ids):
    open_chat(phone, ids["from_prompt"])
    phone.locator("#chat-controls > summary").click()
    phone.locator(".knowledge-panel__attach > summary").click()
    # Nothing typed, the field not clicked: the list is there.
    expect(phone.locator("#knowledge-suggestions .knowledge-suggestion").first).to_contain_text("Kettle manual")
    expect(phone.locator("#knowledge-query")).not_to_be_focused()
    save(phone, "phone-attach")

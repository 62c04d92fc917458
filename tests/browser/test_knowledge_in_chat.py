"""Knowledge in a chat, in Chromium: a base filled through its page, attached by typing `#` in the
message box, a reply that cites it (a chip opens the passage), then detached with × and attached
again through the panel's Attach… picker; the passage's link opens the document at it, marked."""

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

BASE = "Lumora kettle"
FACT = "The indicator ring glows amber while the kettle descales"
# More than one passage's worth (KNOWLEDGE_CHUNK_TOKENS is 200), so the first chip opens the passage
# that holds the answer, not the whole file.
MARKDOWN = f"""# Lumora kettle

## Filling

Fill the Lumora kettle with at least half a litre of water; below the MIN mark the heater stays off.

The jug holds one point seven litres at most, marked MAX on the window at the side of the handle.

Always fill it through the lid, never through the spout, so that the limescale filter stays in place.

Pour out any water left from the day before: standing water tastes flat and leaves more scale behind.

## Descaling

{FACT}; it turns green when the descaling cycle is finished.

Start a cycle by holding the power switch down for six seconds with the jug filled to the MAX mark.

Use a sachet of citric acid in the water, never vinegar, which leaves a smell the seals keep for weeks.

Rinse the jug twice with clean water after the cycle before boiling any water to drink.

## Warranty

The warranty lasts three years from the date on the receipt, for the base and for the jug alike.

Register the kettle on the maker's website within a month to extend the warranty by two more years.

The warranty does not cover a heater damaged by limescale when the kettle was never descaled.

Send the kettle back in its original box, with the receipt, to the shop where you bought it.
"""
QUESTION = "What colour does the indicator ring glow while the kettle descales?"


def test_a_chat_attaches_a_knowledge_base_by_hash_and_cites_it(page, log_in, screenshot, tmp_path):
    page.set_default_timeout(120_000)  # a busy 2-core machine: the job worker embeds, the model writes
    (tmp_path / "product.md").write_text(MARKDOWN)
    log_in()
    page.goto("/knowledge/")
    page.get_by_label("Name").fill(BASE)
    page.get_by_role("button", name="Create knowledge base").click()
    page.wait_for_url(re.compile(r"/knowledge/\d+/$"))
    base_id = re.search(r"/knowledge/(\d+)/$", page.url).group(1)
    page.locator("#upload-files").set_input_files(str(tmp_path / "product.md"))
    page.get_by_role("button", name="Upload").click()
    # The job worker loads the embedder for the first document: minutes on a busy machine.
    expect(page.locator('#documents tr[data-status="ready"]')).to_have_count(1, timeout=180_000)

    page.goto("/chat/")
    page.get_by_role("button", name="New chat", exact=True).click()
    page.wait_for_url(re.compile(r"/chat/\d+/$"))
    page.locator('#connection[data-state="open"]').wait_for()
    panel = page.locator("#knowledge-panel")
    chip = panel.locator(f'span[data-attached="knowledge_base:{base_id}"]')
    expect(panel).to_contain_text("None.")

    # `#` and a few letters: the menu offers the base; Enter attaches it and takes the `#word` out.
    box = page.locator("#message-input")
    box.click()
    box.press_sequentially(QUESTION + " #Lumo")
    menu = page.locator("#hash-menu")
    expect(menu.locator(".knowledge-suggestion").first).to_contain_text(BASE)
    expect(menu.locator('.knowledge-suggestion[aria-selected="true"]')).to_have_count(1)
    screenshot("knowledge-chat-hash-menu")
    box.press("Enter")
    expect(chip).to_contain_text(BASE)
    expect(menu).to_be_hidden()
    expect(box).to_have_value(QUESTION + " ")
    expect(page.locator("#messages [data-role]")).to_have_count(0)  # Enter attached; it sent nothing

    # The reply searches the base: a sources line, and a chip per passage that opens it.
    box.press("Enter")
    reply = page.locator('#messages .message--assistant[data-status="complete"]')
    expect(reply.locator(".sources__note")).to_contain_text(f"searched {BASE}", timeout=180_000)
    citations = reply.locator("details.citation")
    first = citations.first.locator("summary.chip--citation")
    expect(first).to_have_text(re.compile(r"^\[1\] product\.md$"))
    passage = citations.first.locator(".citation__passage .citation__text")
    expect(passage).to_be_hidden()
    first.click()
    expect(passage).to_be_visible()
    expect(passage).to_contain_text(FACT)
    expect(citations.first.locator(".citation__where")).to_contain_text("product.md")
    # An open passage takes the whole row under the chips, however short its lines.
    card = citations.first.locator(".citation__passage").bounding_box()
    assert card["width"] == pytest.approx(reply.locator(".sources").bounding_box()["width"], abs=2), card
    screenshot("knowledge-chat-citation")

    # The panel is in the Controls sheet: × detaches it (the panel comes back without it); the Attach…
    # picker finds it and attaches it again.
    page.locator("#chat-controls > summary").click()
    panel.get_by_role("button", name=f"Detach {BASE}").click()
    expect(chip).to_have_count(0)
    expect(panel).to_contain_text("None.")
    panel.locator("details.knowledge-panel__attach > summary").click()
    page.locator("#knowledge-query").fill("lumo")
    suggestions = page.locator("#knowledge-suggestions .knowledge-suggestion")
    expect(suggestions).to_have_count(1)  # opening it lists everything (product.md too); the letters filter
    suggestion = suggestions.first
    expect(suggestion).to_contain_text(BASE)
    # The empty panel's sentence pushes Attach… far right: its picker still fits in the window.
    picker = page.locator(".knowledge-panel__picker").bounding_box()
    assert picker["x"] + picker["width"] <= page.viewport_size["width"], picker
    screenshot("knowledge-chat-picker")
    suggestion.click()
    expect(chip).to_contain_text(BASE)
    expect(panel.locator("details.knowledge-panel__attach")).not_to_have_attribute("open", "")

    # A reload shows the same bar (the page embeds the panel that attaching answered with), and the
    # reply keeps its sources.
    page.reload()
    expect(chip).to_contain_text(BASE)
    expect(panel.locator(".knowledge-panel__how > summary")).to_have_text("Search: top 5, hybrid")
    expect(reply.locator(".sources__note")).to_contain_text(f"searched {BASE}")

    # The passage's link opens its document at that passage: marked, and in view.
    citations.first.locator("summary.chip--citation").click()
    citations.first.get_by_role("link", name="Open the document").click()
    page.wait_for_url(re.compile(r"/knowledge/\d+/documents/\d+/\?passage=\d+#chunk-\d+$"))
    cited = page.locator(".knowledge-chunks tr.knowledge-chunks__cited")
    expect(cited).to_have_count(1)
    expect(cited).to_contain_text(FACT)
    expect(cited).to_be_in_viewport()
    screenshot("knowledge-cited-passage")

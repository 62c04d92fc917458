"""A knowledge base in Chromium: created from the list, two files uploaded at once, their status
followed live until the served studio's job worker has indexed them (the list and the upload's
notice stop polling), then a search that shows the passage, and a rebuild with a new passage size
followed to its switch-over."""

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

MARKDOWN = """# Press maintenance

## Reset

Hold the green button for five seconds to reset the hydraulic press after a jam.

## Parts

Valve ZX-4411 fits the model B press; order it from the stores.
"""
TEXT = "Opening hours\n\nThe workshop opens at seven and closes at four on weekdays. It is closed on Sundays.\n"


def test_a_knowledge_base_is_created_filled_and_searched(page, log_in, screenshot, tmp_path):
    (tmp_path / "press.md").write_text(MARKDOWN)
    (tmp_path / "hours.txt").write_text(TEXT)
    log_in()
    page.get_by_role("link", name="Knowledge").first.click()
    page.wait_for_url("**/knowledge/")
    page.get_by_label("Name").fill("Workshop")
    page.get_by_label("Description").fill("Manuals and opening hours of the workshop")
    page.get_by_role("button", name="Create knowledge base").click()
    page.wait_for_url(re.compile(r"/knowledge/\d+/$"))
    expect(page.locator("h1")).to_contain_text("Workshop")

    page.locator("#upload-files").set_input_files([str(tmp_path / "press.md"), str(tmp_path / "hours.txt")])
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload")).to_contain_text("2 documents queued.")
    rows = page.locator("#documents tbody tr")
    expect(rows).to_have_count(2)
    # The job worker loads the embedder for the first document: minutes on a busy machine.
    expect(page.locator('#documents tr[data-status="ready"]')).to_have_count(2, timeout=180_000)
    expect(page.locator("#documents")).not_to_have_attribute("hx-trigger", re.compile("every"))
    # The upload's notice follows its documents, then stops asking.
    notice = page.locator("#upload-progress")
    expect(notice).to_have_text("2 documents ready.")
    expect(notice).not_to_have_attribute("hx-trigger", re.compile("every"))
    expect(page.locator("#upload").get_by_role("button", name="Upload")).to_be_visible()  # the form stays around it
    expect(page.locator("#storage-use")).to_contain_text("Your documents' files:")
    expect(page.locator("#documents")).to_contain_text("press.md")
    screenshot("knowledge-base")

    page.get_by_label("Query").fill("How do I reset the press after a jam?")
    page.get_by_role("button", name="Search").click()
    first = page.locator(".knowledge-hit").first
    expect(first).to_contain_text("Hold the green button", timeout=30_000)
    expect(first).to_contain_text("press.md")
    expect(first).to_contain_text("fused")
    screenshot("knowledge-search")

    # A rebuild with a smaller passage size: the card follows it live and says when it switched over.
    page.once("dialog", lambda dialog: dialog.accept())  # "Index every document again…?"
    page.get_by_label("Passage size (tokens)").fill("32")
    page.get_by_label("Overlap (tokens)").fill("0")
    page.get_by_role("button", name="Rebuild the index").click()
    expect(page.locator("#index")).to_contain_text("Rebuilt: searches use the new index", timeout=180_000)
    expect(page.locator("#index")).to_contain_text("passages of 32 tokens")
    screenshot("knowledge-rebuilt")

    page.locator(".knowledge-hit a", has_text="press.md").first.click()
    page.wait_for_url(re.compile(r"/knowledge/\d+/documents/\d+/$"))
    expect(page.locator(".knowledge-chunks")).to_contain_text("Valve ZX-4411")
    screenshot("knowledge-chunks")

    page.get_by_role("link", name="Knowledge bases").click()
    row = page.locator(".knowledge-bases tr", has_text="Workshop")
    expect(row).to_contain_text("2 of 2")
    expect(row).to_contain_text("private")
    screenshot("knowledge-list")


ARTICLE = "\n\n".join(
    [
        "Heat pumps",
        "A heat pump moves warmth from the outside air into the house, even in winter.",
        "== Defrosting ==",
        "Ice on the outdoor coil is melted every ninety minutes by running the cycle backwards.",
        "== Noise ==",
        "The fan is quieter than a fridge: about forty decibels at a distance of three metres.",
    ]
)


def test_a_near_copy_shows_under_the_passage_and_the_ranking_changes_without_a_reload(
    page, log_in, screenshot, tmp_path
):
    (tmp_path / "heat_pumps.txt").write_text(ARTICLE)
    (tmp_path / "mirror.txt").write_text("Archived mirror copy, retrieved 12 March 2024.\n\n" + ARTICLE)
    log_in()
    page.goto("/knowledge/")
    page.get_by_label("Name").fill("Heating")
    page.get_by_role("button", name="Create knowledge base").click()
    page.wait_for_url(re.compile(r"/knowledge/\d+/$"))
    page.locator("#upload-files").set_input_files([str(tmp_path / "heat_pumps.txt"), str(tmp_path / "mirror.txt")])
    page.get_by_role("button", name="Upload").click()
    expect(page.locator('#documents tr[data-status="ready"]')).to_have_count(2, timeout=180_000)

    ranking = page.locator("#ranking")
    expect(ranking).to_contain_text("near duplicates shown once")
    ranking.get_by_label("Share of meaning (vectors) in hybrid search").fill("0.85")
    ranking.get_by_role("button", name="Save ranking").click()
    expect(ranking).to_contain_text("Saved")
    expect(ranking).to_contain_text("meaning 0.85, keywords 0.15")

    page.get_by_label("Query").fill("How often is the ice melted off the coil?")
    page.get_by_role("button", name="Search").click()
    first = page.locator(".knowledge-hit").first
    expect(first).to_contain_text("ninety minutes", timeout=30_000)
    expect(first.locator(".knowledge-hit__also")).to_contain_text("Also in:")
    texts = page.locator(".knowledge-hit__text").all_inner_texts()
    assert sum("ninety minutes" in text for text in texts) == 1  # the copy's passage is not a second hit
    screenshot("knowledge-ranking")

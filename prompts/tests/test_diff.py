"""Two versions side by side, section by section, with the changed words marked."""

import pytest

from prompts.diff import diff_versions

pytestmark = pytest.mark.django_db


def sections_of(prompt, old=1, new=2):
    return {
        section.title: section
        for section in diff_versions(prompt.versions.get(number=old), prompt.versions.get(number=new))
    }


def changed_words(side):
    return [text for text, changed in side.segments if changed]


def whole_line(side):
    return "".join(text for text, _ in side.segments)


def test_a_changed_instructions_line_shows_as_changed_with_the_words_marked(notes):
    instructions = sections_of(notes)["Instructions"]
    assert instructions.changed
    assert [row.kind for row in instructions.rows] == ["equal", "changed"]
    changed = instructions.rows[1]
    assert (changed.left.number, changed.right.number) == (2, 2)
    assert whole_line(changed.left) == "Be brief." and whole_line(changed.right) == "Be concise."
    assert changed_words(changed.left) == ["brief"] and changed_words(changed.right) == ["concise"]


def test_unchanged_lines_are_equal_and_unmarked(notes):
    first_line = sections_of(notes)["Instructions"].rows[0]
    assert first_line.kind == "equal"
    assert first_line.left.segments == first_line.right.segments == [("Answer in English.", False)]


def test_an_added_example_shows_as_added(notes):
    examples = sections_of(notes)["Few-shot examples"]
    added = [row for row in examples.rows if row.kind == "added"]
    assert {row.kind for row in examples.rows} == {"equal", "added"}
    assert all(row.left.number is None for row in added)
    added_text = "\n".join(whole_line(row.right) for row in added)
    assert "Example 2" in added_text
    assert "Input: Lunch is cancelled" in added_text and "Output: No lunch: kitchen flooded." in added_text


def test_unchanged_parameters_and_template_are_equal(notes):
    sections = sections_of(notes)
    for title in ("Parameters", "Template"):
        assert not sections[title].changed, title
        assert all(row.kind == "equal" for row in sections[title].rows)
    parameters = "\n".join(whole_line(row.left) for row in sections["Parameters"].rows)
    assert "temperature: 0.2" in parameters and "max_new_tokens: 64" in parameters and "stop: '###'" in parameters


def test_going_backwards_shows_the_example_as_removed(notes):
    examples = sections_of(notes, old=2, new=1)["Few-shot examples"]
    assert {row.kind for row in examples.rows} == {"equal", "removed"}


def test_a_version_compared_with_itself_has_no_changes(notes):
    assert not any(section.changed for section in sections_of(notes, old=2, new=2).values())


def test_the_diff_page_shows_both_versions(client, bob, notes):
    client.force_login(bob)  # reading is open to every signed-in person
    response = client.get(f"/prompts/{notes.slug}/diff/?from=1&to=2")
    assert response.status_code == 200
    page = response.content.decode()
    assert response.context["old"].number == 1 and response.context["new"].number == 2
    assert "brief" in page and "concise" in page and "No lunch: kitchen flooded." in page


def test_the_diff_page_answers_404_for_a_version_that_does_not_exist(client, bob, notes):
    client.force_login(bob)
    assert client.get(f"/prompts/{notes.slug}/diff/?from=1&to=9").status_code == 404
    assert client.get(f"/prompts/{notes.slug}/diff/?from=one&to=2").status_code == 404
    assert client.get("/prompts/no-such-prompt/diff/").status_code == 404

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from evals.tag_cells import tags_cell_joined
from evals.tool_answers import answer_cards as tool_answer_cards
from prompts.diff import word_diff as diff_words

register = template.Library()
DIFF_CHARS = 2_000  # the word diff is quadratic: long outputs are compared by their start


@register.simple_tag
def word_diff(expected: str, output: str):
    """`output` with the words that differ from `expected` marked (<mark>), escaped."""
    _, segments = diff_words((expected or "")[:DIFF_CHARS], (output or "")[:DIFF_CHARS])
    marked = format_html_join(
        "", "{}", ((format_html("<mark>{}</mark>", text) if changed else text,) for text, changed in segments)
    )
    more = "…" if len(output or "") > DIFF_CHARS else ""
    return mark_safe(f'<span class="word-diff">{marked}{more}</span>')  # noqa: S308 (escaped above)


@register.filter
def tags_cell(tags) -> str:
    """A case's tags as the tags field shows them, so saving the form keeps a tag that holds a comma."""
    return tags_cell_joined(tag.name for tag in tags)


@register.filter
def answer_cards(answer: str) -> dict:
    """A case's or a reply's answer as a page shows it: {"content", "calls": [{"name", "arguments"}]}
    (evals.tool_answers; no calls for a text answer)."""
    return tool_answer_cards(answer or "")

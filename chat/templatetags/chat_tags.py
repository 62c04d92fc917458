from django import template
from django.utils.safestring import mark_safe

from chat.markdown import render_markdown
from knowledge.retrieval import note

register = template.Library()


@register.filter
def markdown(text: str):
    return mark_safe(render_markdown(text))  # sanitised by nh3 in render_markdown


@register.filter
def retrieval_note(record) -> str:
    """What a reply's retrieval searched and found, in a line (knowledge.retrieval.note)."""
    return note(record)

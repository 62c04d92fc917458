import json

from django import template
from django.template.loader import render_to_string
from django.utils.safestring import mark_safe

from chat.markdown import render_markdown
from knowledge.retrieval import note
from studio.llm.tools import read_reply, tool_results_in

register = template.Library()


@register.filter
def markdown(text: str):
    return mark_safe(render_markdown(text))  # sanitised by nh3 in render_markdown


@register.filter
def retrieval_note(record) -> str:
    """What a reply's retrieval searched and found, in a line (knowledge.retrieval.note)."""
    return note(record)


# --- tool calls and their results, as cards (any page that shows a turn: chat, playground, evals) ---


@register.filter
def tool_calls(text: str) -> list[dict]:
    """The calls an assistant turn holds, each {"name", "arguments": pretty JSON}; [] for none."""
    if not isinstance(text, str) or "<tool_call>" not in text:
        return []
    return [
        {"name": call["function"]["name"], "arguments": _pretty(call["function"]["arguments"])}
        for call in read_reply(text)[1]
    ]


@register.simple_tag
def turn_html(text: str, role: str = "assistant", answered: str = ""):
    """A turn as the page shows it: an assistant's calls as one card each (the tool's name, the
    arguments as pretty JSON) after its text; a user turn of tool results as "Result of <name>" cards
    (`answered`: the text of the turn whose calls they answer, for the names); else Markdown."""
    if role == "assistant" and isinstance(text, str) and "<tool_call>" in text:
        content, calls = read_reply(text)
        if calls:
            return render_to_string(
                "chat/_tool_calls.html",
                {
                    "content": content,
                    "calls": [
                        {"name": c["function"]["name"], "arguments": _pretty(c["function"]["arguments"])} for c in calls
                    ],
                },
            )
    results = tool_results_in(text) if role == "user" and isinstance(text, str) else None
    if results is not None:
        names = [call["name"] for call in tool_calls(answered)]
        return render_to_string(
            "chat/_tool_results.html",
            {
                "results": [
                    {"name": names[n] if n < len(names) else "", "text": result} for n, result in enumerate(results)
                ]
            },
        )
    return markdown(text)


@register.simple_tag
def message_html(message):
    """A chat message's finished body (turn_html): a turn of tool results reads its parent's calls."""
    answered = ""
    if message.role == "user" and tool_results_in(message.content) is not None and message.parent_id:
        answered = message.parent.content  # only for a turn of results: one query, where one shows
    return turn_html(message.content, message.role, answered)


def _pretty(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
    except ValueError:
        return arguments  # cut short: as written

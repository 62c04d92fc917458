"""Markdown for messages: rendered by markdown-it-py, then sanitised by nh3.

Raw HTML in a message is shown as text (markdown-it's `html` off), and nh3 strips
anything that could still run (javascript: links, event attributes).
"""

import nh3
from markdown_it import MarkdownIt

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True}).enable(["table", "strikethrough"])


def render_markdown(text: str) -> str:
    html = _markdown.render(text or "")
    return nh3.clean(html, link_rel="noopener noreferrer nofollow", url_schemes={"http", "https", "mailto"})

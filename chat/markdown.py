"""Markdown for messages: rendered by markdown-it-py, then sanitised by nh3.

Raw HTML in a message is shown as text (markdown-it's `html` off), and nh3 strips
anything that could still run (javascript: links, event attributes, `style`).
Code blocks are highlighted by Pygments, `$math$` and `$$math$$` become MathML
(latex2mathml), and `finished_blocks` renders a reply's finished blocks while it streams.
"""

import html
import re
from xml.etree.ElementTree import tostring

import nh3
from latex2mathml.converter import convert_to_element
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml, unescapeAll
from mdit_py_plugins.dollarmath import dollarmath_plugin
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

MAX_BLOCK_CHARS = 200_000  # a longer block is shown as plain text, so a hostile reply cannot make rendering slow
MAX_MATH_CHARS = 2_000  # a longer formula is shown as its source, not converted
# latex2mathml takes ~17µs a character (measured): past this much LaTeX in one message the
# formulas are shown as their source, so thousands of small ones cannot add up to seconds either.
MAX_MATH_CHARS_PER_MESSAGE = 20_000

_formatter = HtmlFormatter(nowrap=True)  # only the <span class="k"> runs; the chrome is ours

_MATHML_TAGS = {
    "math",
    "semantics",
    "annotation",
    "mrow",
    "mi",
    "mn",
    "mo",
    "ms",
    "mspace",
    "mtext",
    "msub",
    "msup",
    "msubsup",
    "mfrac",
    "msqrt",
    "mroot",
    "mover",
    "munder",
    "munderover",
    "mtable",
    "mtr",
    "mtd",
    "mstyle",
    "mpadded",
    "mphantom",
    "menclose",
}
# Layout attributes only: latex2mathml's `href` (\href), `style`/`class` (\style, \class) and
# `mathcolor`/`mathbackground` (\color) are left out, so a formula cannot link, restyle or hide text.
_MATHML_ATTRIBUTES = {
    "display",
    "xmlns",
    "mathvariant",
    "mathsize",
    "stretchy",
    "fence",
    "separator",
    "lspace",
    "rspace",
    "accent",
    "accentunder",
    "largeop",
    "linethickness",
    "columnalign",
    "columnlines",
    "columnspacing",
    "rowlines",
    "rowspacing",
    "displaystyle",
    "scriptlevel",
    "form",
    "minsize",
    "maxsize",
    "movablelimits",
    "symmetric",
    "width",
    "height",
    "depth",
    "voffset",
    "notation",
    "linebreak",
}
_ALLOWED_TAGS = nh3.ALLOWED_TAGS | {"button"} | _MATHML_TAGS
_ALLOWED_ATTRIBUTES = {
    **{tag: set(names) for tag, names in nh3.ALLOWED_ATTRIBUTES.items()},
    **{tag: {"class"} for tag in ("div", "span", "button", "pre", "code")},  # code chrome and Pygments' classes
    **{tag: _MATHML_ATTRIBUTES for tag in _MATHML_TAGS},
}
# The Copy button keeps exactly the two attributes chat.js needs, with exactly these values.
_ALLOWED_ATTRIBUTE_VALUES = {"button": {"type": {"button"}, "data-action": {"copy-code"}}}


def _render_code(self, tokens, idx, options, env) -> str:
    """Fenced and indented code: the language bar with Copy, then the highlighted code."""
    token = tokens[idx]
    info = unescapeAll(token.info).strip()
    language = info.split(maxsplit=1)[0] if info else "text"
    try:
        lexer = get_lexer_by_name(language, stripnl=False)  # keep the code's leading blank lines
        code = highlight(token.content, lexer, _formatter)
    except ClassNotFound:  # an unknown language keeps the chrome, without colours
        code = escapeHtml(token.content)
    label = escapeHtml(language)
    return (
        '<div class="code-block"><div class="code-block__bar">'
        f'<span class="code-block__lang">{label}</span>'
        '<button class="link-button code-block__copy" type="button" data-action="copy-code">Copy</button>'
        f'</div><pre class="highlight"><code class="language-{label}">{code}</code></pre></div>\n'
    )


def _math_html(latex: str, *, display: bool, env: dict) -> str:
    latex = latex.strip()
    delimiter = "$$" if display else "$"
    source = f'<code class="math-error">{escapeHtml(delimiter + latex + delimiter)}</code>'
    env["math_chars_left"] = env.get("math_chars_left", MAX_MATH_CHARS_PER_MESSAGE) - len(latex)
    if len(latex) > MAX_MATH_CHARS or env["math_chars_left"] < 0:
        return source
    try:
        math = convert_to_element(latex, display="block" if display else "inline")
    except Exception:  # latex2mathml raises many kinds (its own, ValueError, RecursionError...) on bad input
        return source
    # latex2mathml writes symbols as entity text ("&#x0003C;") and unescapes its whole output,
    # which would let \text{<b>} through as markup: decode the text here and let ElementTree escape it.
    for element in math.iter():
        element.text = html.unescape(element.text) if element.text else element.text
        element.tail = html.unescape(element.tail) if element.tail else element.tail
    return tostring(math, encoding="unicode")


def _render_math_inline(self, tokens, idx, options, env) -> str:
    return _math_html(tokens[idx].content, display=False, env=env)


def _render_math_inline_double(self, tokens, idx, options, env) -> str:
    # $$x$$ within a sentence: displayed, but without the plugin's <div>, which cannot sit in a <p>
    return _math_html(tokens[idx].content, display=True, env=env)


def _render_math_block(self, tokens, idx, options, env) -> str:
    math = _math_html(tokens[idx].content, display=True, env=env)
    return (f"<p>{math}</p>" if math.startswith("<code") else math) + "\n"


_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True}).enable(
    ["table", "strikethrough"]
)
# Prices stay text: no space just inside the dollars (allow_space) and no digit just outside them
# (allow_digits), so "$5 and $10" is not a formula, as in Pandoc. No blank lines inside $$ (as in
# LaTeX), so a blank line always ends a block for finished_blocks; no labels, which would need ids.
_markdown.use(
    dollarmath_plugin,
    allow_space=False,
    allow_digits=False,
    allow_blank_lines=False,
    allow_labels=False,
    double_inline=True,
)
_markdown.add_render_rule("fence", _render_code)
_markdown.add_render_rule("code_block", _render_code)
_markdown.add_render_rule("math_inline", _render_math_inline)
_markdown.add_render_rule("math_inline_double", _render_math_inline_double)
_markdown.add_render_rule("math_block", _render_math_block)


def render_markdown(text: str) -> str:
    rendered = _markdown.render(text or "")
    return nh3.clean(
        rendered,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        tag_attribute_values=_ALLOWED_ATTRIBUTE_VALUES,
        link_rel="noopener noreferrer nofollow",
        url_schemes={"http", "https", "mailto"},
    )


# Where blocks end, for finished_blocks. Each pattern is searched from the last match on, so one
# call reads text[start:] once. A fence opener is found liberally (inside quotes and list items
# too): mistaking a line for one only delays a block, while missing one would split a code block
# at its blank lines. A math block is only found at the top level, where the blank-line rule
# still ends it otherwise (it cannot hold blank lines).
_CONTAINER_PREFIX = r"(?:[ \t>]|[-+*][ \t]|\d{1,9}[.)][ \t])*"
_BLANK_LINES = re.compile(r"(?:[ \t\r]*\n)+")
_BLANK_LINE_OR_FENCE = re.compile(rf"^(?:[ \t\r]*\n|{_CONTAINER_PREFIX}(`{{3,}}|~{{3,}})([^\n]*)\n)", re.M)
_FENCE_CLOSER = re.compile(rf"^{_CONTAINER_PREFIX}(`{{3,}}|~{{3,}})[ \t\r]*\n", re.M)
_MATH_OPENER = re.compile(r" {0,3}\$\$([^\n]*)\n")
_MATH_CLOSER_OR_BLANK_LINE = re.compile(r"^(?:[^\n]*\$\$)?[ \t\r]*\n", re.M)


def _block_end(text: str, begin: int) -> tuple[int, int] | None:
    """Where the block starting at `begin` ends, once more text can no longer change it:
    (end of its text, start of what follows), or None while it is unfinished."""
    if opener := _MATH_OPENER.match(text, begin):
        line = opener.group(0).strip()
        if len(line) > 3 and line.endswith("$$"):  # $$x$$ on one line
            return opener.end(), opener.end()
        if "$$" not in opener.group(1):  # else it is not a math block (dollarmath's rule)
            closer = _MATH_CLOSER_OR_BLANK_LINE.search(text, opener.end())
            if closer is None:
                return None
            return (closer.end(), closer.end()) if "$$" in closer.group(0) else (closer.start(), closer.end())
    position = begin
    while event := _BLANK_LINE_OR_FENCE.search(text, position):
        fence = event.group(1)
        if fence is None:  # a blank line
            return event.start(), event.end()
        position = event.end()
        if fence[0] == "`" and "`" in event.group(2):
            continue  # ```inline code``` on one line, not a fence
        while closer := _FENCE_CLOSER.search(text, position):
            position = closer.end()
            if closer.group(1)[0] == fence[0] and len(closer.group(1)) >= len(fence):
                return position, position
        return None
    return None


def finished_blocks(text: str, start: int = 0) -> tuple[int, list[str]]:
    """The Markdown blocks of text[start:] that more text can no longer change, rendered:
    (the offset where the unfinished tail begins, [html of each finished block])."""
    blocks = []
    if text.find("\n", start) == -1:  # nothing can end before a line does: the usual case mid-line
        return start, blocks
    while True:
        if blank_lines := _BLANK_LINES.match(text, start):  # between blocks, part of neither
            start = blank_lines.end()
        if (end := _block_end(text, start)) is None:
            return start, blocks
        block = text[start : end[0]]
        blocks.append(f"<pre>{escapeHtml(block)}</pre>" if len(block) > MAX_BLOCK_CHARS else render_markdown(block))
        start = end[1]

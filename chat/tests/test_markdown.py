from chat.markdown import MAX_BLOCK_CHARS, MAX_MATH_CHARS_PER_MESSAGE, finished_blocks, render_markdown

REPLY = (
    "Here is the plan:\n"
    "\n"
    "- read the file\n"
    "- count the words\n"
    "\n"
    "| word | count |\n"
    "|------|------:|\n"
    "| the  | 12    |\n"
    "\n"
    "```python\n"
    "def count(text):\n"
    "\n"
    "\n"
    "    return len(text.split())\n"
    "```\n"
    "The cost is $O(n)$ for $5 and $10 of compute.\n"
    "\n"
    "$$\n"
    "\\sum_{i=1}^{n} x_i\n"
    "$$\n"
    "That is all"
)


def test_it_highlights_python_in_the_code_block_chrome():
    html = render_markdown("```python\ndef f():\n    return 1\n```\n")
    assert html.startswith(
        '<div class="code-block"><div class="code-block__bar"><span class="code-block__lang">python</span>'
    )
    assert '<button class="link-button code-block__copy" type="button" data-action="copy-code">Copy</button>' in html
    assert '<pre class="highlight"><code class="language-python"><span class="k">def</span>' in html


def test_it_shows_a_hostile_language_label_as_text():
    html = render_markdown("```<script>alert(1)</script>\nx\n```\n")
    assert "<script" not in html
    assert '<span class="code-block__lang">&lt;script&gt;alert(1)&lt;/script&gt;</span>' in html


def test_an_unknown_language_keeps_the_chrome_without_colours():
    html = render_markdown("```nosuchlanguage\nif x < 1: pass\n```\n")
    assert '<span class="code-block__lang">nosuchlanguage</span>' in html
    assert '<code class="language-nosuchlanguage">if x &lt; 1: pass\n</code>' in html


def test_indented_code_gets_the_chrome_labelled_text():
    html = render_markdown("    print(1)\n")
    assert '<span class="code-block__lang">text</span>' in html and "print(1)" in html


def test_raw_html_is_still_shown_as_text():
    html = render_markdown('<script>alert(1)</script> <img src=x onerror="alert(2)"> <b style="color:red">b</b>')
    assert "<script" not in html and "<img" not in html and "<b" not in html
    assert "&lt;script&gt;" in html


def test_javascript_links_are_stripped_and_others_marked_nofollow():
    html = render_markdown("[bad](javascript:alert(1)) [good](https://example.org)")
    assert "javascript:" not in html.split("[bad]")[0] and 'href="javascript' not in html
    assert '<a href="https://example.org" rel="noopener noreferrer nofollow">good</a>' in html


def test_inline_and_display_math_become_mathml():
    html = render_markdown("Inline $x^2$ here.\n\n$$\n\\frac{a}{b}\n$$\n")
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="inline"><mrow><msup>' in html
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="block"><mrow><mfrac>' in html


def test_math_cannot_smuggle_markup_links_or_styles():
    html = render_markdown(
        r"$\text{<img src=x onerror=alert(1)>}$ $\href{javascript:alert(1)}{x}$ $\style{color:red}{y}$"
    )
    assert "<img" not in html and "href" not in html and "style" not in html
    assert "&lt;img" in html


def test_invalid_latex_does_not_raise_and_shows_the_source_as_code():
    html = render_markdown("Broken $a^b^c$ here.\n\n$$\na^b^c\n$$\n")
    assert '<code class="math-error">$a^b^c$</code>' in html
    assert '<code class="math-error">$$a^b^c$$</code>' in html


def test_a_formula_too_long_to_convert_is_shown_as_code():
    html = render_markdown("$" + "x+" * 1500 + "x$")
    assert "<math" not in html and 'class="math-error"' in html


def test_math_past_the_per_message_budget_is_shown_as_code():
    formulas = MAX_MATH_CHARS_PER_MESSAGE // 3 + 100  # "x+y" is 3 characters of LaTeX
    html = render_markdown("$x+y$ " * formulas)
    assert html.count("<math") == MAX_MATH_CHARS_PER_MESSAGE // 3
    assert html.count('<code class="math-error">$x+y$</code>') == 100


def test_prices_with_dollars_stay_text():
    for text in ["It costs $5 and $10.", "Between $5-$10 a month", "Pay $1,000 up front, $500 later", "$5, $6, and $7"]:
        assert "<math" not in render_markdown(text), text


def test_paragraphs_are_finished_at_blank_lines():
    offset, blocks = finished_blocks("One\nline.\n\n\nTwo.\n\nThree")
    assert blocks == ["<p>One<br>\nline.</p>\n", "<p>Two.</p>\n"]
    assert offset == len("One\nline.\n\n\nTwo.\n\n")


def test_nothing_is_finished_before_a_blank_line_ends_a_block():
    assert finished_blocks("One\nline.\n") == (0, [])
    assert finished_blocks("One\nline.\n   ") == (0, [])  # a line of spaces is blank only once it ends


def test_an_open_fence_is_not_finished_even_with_blank_lines_inside():
    text = "```\nfirst\n\n\nsecond\n~~~\n``\n\n"
    assert finished_blocks(text) == (0, [])
    assert finished_blocks("~~~~\na\n\n```\n~~~\n\n") == (0, [])  # a closer needs the same character, as long


def test_a_closed_fence_is_finished_at_its_closing_line():
    text = "Intro\n```js\nlet a\n\nlet b\n```\n"
    offset, blocks = finished_blocks(text)
    assert offset == len(text) and len(blocks) == 1
    assert "<p>Intro</p>" in blocks[0] and 'code-block__lang">js<' in blocks[0] and "let" in blocks[0]


def test_a_display_math_block_is_finished_at_its_closing_line():
    text = "$$\nx^2\n$$\nmore"
    offset, blocks = finished_blocks(text)
    assert offset == len("$$\nx^2\n$$\n") and 'display="block"' in blocks[0]


def test_streaming_a_reply_returns_every_block_once_and_the_right_tail():
    offset, streamed, offsets = 0, [], []
    for end in range(1, len(REPLY) + 1):  # one character at a time, as tokens arrive
        offset, blocks = finished_blocks(REPLY[:end], offset)
        streamed += blocks
        offsets.append(offset)
    assert offsets == sorted(offsets)  # the tail only moves forward
    assert (offset, streamed) == finished_blocks(REPLY)  # the same blocks as one call, each once
    assert REPLY[offset:] == "That is all"
    assert len(streamed) == 6
    assert streamed[1].startswith("<ul>") and streamed[2].startswith("<table>")
    assert "code-block" in streamed[3] and "return" in streamed[3]
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="inline">' in streamed[4]
    assert "$5 and $10" in streamed[4] and 'display="block"' in streamed[5]


def test_a_block_too_long_to_render_is_returned_as_escaped_text():
    block = "<b>*x*</b> " * (300_000 // 11)
    assert len(block) > MAX_BLOCK_CHARS
    offset, blocks = finished_blocks(block + "\n\nnext")
    assert blocks == [f"<pre>{block.replace('<', '&lt;').replace('>', '&gt;')}\n</pre>"]
    assert offset == len(block) + 2

"""A document's text cut into chunks, sized in the embedder's own tokens. Django-free.

semantic-text-splitter's MarkdownSplitter cuts at the largest Markdown unit that fits (a section,
then a paragraph, a sentence, a word), with overlap between neighbours. It counts tokens with the
embedder's tokenizer (its tokenizer.json, read by `tokenizers`) without the two special tokens the
embedder adds ([CLS], [SEP]), so a chunk of `capacity` tokens plus those two must fit the 256
all-MiniLM-L6-v2 reads: the constructor refuses a capacity that does not, and every chunk is
counted again as the embedder will see it. Nothing is cut silently.

A chunk keeps its page (PDF), its heading (the trail of Markdown headings above it: "Setup ›
Install") and its offsets: character positions in the document's text, which is its sections
joined by a blank line. A heading the splitter left alone in a chunk (its section did not fit
with it) is no chunk of its own: the chunks below it carry it.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from semantic_text_splitter import MarkdownSplitter
from tokenizers import Tokenizer

from studio.llm.numpy_embedder import MAX_TOKENS, bundled_embedder_folder

from .parsing import Section

SEPARATOR = "\n\n"  # between sections, in the text the offsets count in
SPECIAL_TOKENS = 2  # [CLS] and [SEP], added by the embedder, not counted by the splitter
MAX_HEADING_CHARS = 500
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
# Plain text's headings: a wiki export's "== History ==" (level = one less than its = signs), or a
# short line of its own between blank lines that ends without punctuation ("Training data").
_WIKI_HEADING = re.compile(r"^[ \t]*(={2,6})[ \t]*([^=].*?)[ \t]*\1[ \t]*$")
_BARE_HEADING = re.compile(r"^[ \t]*([A-Z0-9\"'(][^\n]{0,78}[^.!?:;,\s])[ \t]*$")
MAX_BARE_HEADING_WORDS = 10
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


@dataclass(frozen=True)
class Piece:
    ordinal: int
    text: str
    page: int | None
    heading: str
    start: int
    end: int
    token_count: int  # as the embedder reads it, special tokens included
    # What is embedded: the heading trail, a blank line, the text ("Handbook › Setup\n\nPlug it
    # in"), so a passage is found by what it is about as well as by its words; the trail is cut
    # where the two would pass what the embedder reads.
    embedding_text: str = ""


class Chunker:
    def __init__(
        self, *, capacity: int, overlap: int, tokenizer_file: Path | None = None, max_tokens: int = MAX_TOKENS
    ):
        if capacity + SPECIAL_TOKENS > max_tokens:
            raise ValueError(
                f"chunks of {capacity} tokens do not fit the embedder: it reads {max_tokens} tokens, "
                f"{SPECIAL_TOKENS} of them its own; use at most {max_tokens - SPECIAL_TOKENS}"
            )
        if not 0 <= overlap < capacity:
            raise ValueError(f"the overlap ({overlap} tokens) must be from 0 to less than a chunk ({capacity})")
        self.max_tokens = max_tokens
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file or bundled_embedder_folder() / "tokenizer.json"))
        # The file's own settings cut at 128 and pad to 128: the splitter must see true lengths.
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.splitter = MarkdownSplitter.from_huggingface_tokenizer(self.tokenizer, capacity, overlap)

    def split(self, sections: Iterable[Section], *, plain_text: bool = False, title: str = "") -> list[Piece]:
        """`plain_text`: the document is plain text, whose headings are lines of their own
        (HeadingTrail); `title`: the document's title, the first step of every chunk's trail
        unless its own headings begin with it."""
        pieces: list[Piece] = []
        base = 0  # where the section starts in the document's text
        for section in sections:
            found = self.splitter.chunk_indices(section.text)  # [(character offset, chunk text)]
            counts = [len(e.ids) for e in self.tokenizer.encode_batch([text for _, text in found])]
            headings = HeadingTrail(section.text, plain_text=plain_text) if section.heading is None else None
            for (offset, text), token_count in zip(found, counts):
                if token_count > self.max_tokens:  # the splitter's promise broken: never index a cut chunk
                    raise AssertionError(f"a chunk of {token_count} tokens passed the embedder's {self.max_tokens}")
                if headings is not None and "\n" not in text.strip() and headings.is_heading(text):
                    continue  # a heading split from its text: the chunks after it carry it as their heading
                heading = section.heading if headings is None else headings.at(offset)
                heading = with_title(title, heading or "")[:MAX_HEADING_CHARS]
                pieces.append(
                    Piece(
                        ordinal=len(pieces),
                        text=text,
                        page=section.page,
                        heading=heading,
                        start=base + offset,
                        end=base + offset + len(text),
                        token_count=token_count,
                        embedding_text=self._with_trail(heading, text, token_count),
                    )
                )
            base += len(section.text) + len(SEPARATOR)
        return pieces

    def _with_trail(self, heading: str, text: str, token_count: int) -> str:
        if not heading:
            return text
        room = self.max_tokens - token_count - 1  # the blank line between them is about a token
        if room <= 0:
            return text
        encoded = self.tokenizer.encode(heading, add_special_tokens=False)
        if len(encoded.ids) > room:
            heading = heading[: encoded.offsets[room - 1][1]]
        return f"{heading}\n\n{text}"


def with_title(title: str, heading: str) -> str:
    """A chunk's trail with the document's title first ("Handbook › Setup"), where it is not already."""
    title = " ".join(title.split())
    if not title or heading == title or heading.startswith(title + " › "):
        return heading
    return f"{title} › {heading}" if heading else title


def document_title(name: str, text: str, *, plain_text: bool) -> str:
    """What a document is called: its first heading when one of its first three lines is one (a
    banner line may come before it), else its file name without the extension."""
    lines = [line for line in text[:2000].split("\n") if line.strip()][:3]
    for line in lines:
        match = _HEADING.match(line) or _WIKI_HEADING.match(line)
        if match:
            return match.group(2).strip()[:200]
        if plain_text and _is_bare_heading(line):
            return line.strip()[:200]
    stem = name.rsplit("/", 1)[-1]
    return (stem.rsplit(".", 1)[0] if "." in stem else stem).replace("_", " ").strip()[:200]


def _is_bare_heading(line: str) -> bool:
    return bool(_BARE_HEADING.match(line)) and len(line.split()) <= MAX_BARE_HEADING_WORDS


class HeadingTrail:
    """The headings of a text, and the trail of them in force at any offset: Markdown's `#` lines
    (code fences skipped: a `# comment` in a shell block is no heading); in plain text also a wiki
    export's `== Section ==` lines and a short line of its own between blank lines (level 1, the
    title above every one of them)."""

    def __init__(self, text: str, *, plain_text: bool = False):
        self.plain_text = plain_text
        self.bare_headings: set[str] = set()
        self.positions: list[int] = []
        self.trails: list[str] = []
        open_levels: dict[int, str] = {}
        in_fence, position = False, 0
        lines = text.split("\n")
        for number, line in enumerate(lines):
            found = None
            if _FENCE.match(line):
                in_fence = not in_fence
            elif not in_fence and (match := _HEADING.match(line)):
                found = len(match.group(1)), match.group(2).strip()
            elif plain_text and (match := _WIKI_HEADING.match(line)):
                found = len(match.group(1)), match.group(2).strip()
            elif (
                plain_text
                and _is_bare_heading(line)
                and (number == 0 or not lines[number - 1].strip())
                and number + 2 < len(lines)
                and not lines[number + 1].strip()
                and any(line.strip() for line in lines[number + 2 :])
            ):  # a line with text after it: a document of one short line is text, not a heading
                found = 2, line.strip()  # beside `== Section ==`: a section, below the title
                self.bare_headings.add(line.strip())
            if found:
                level, title = found
                open_levels = {lvl: name for lvl, name in open_levels.items() if lvl < level}
                open_levels[level] = title
                self.positions.append(position)
                self.trails.append(" › ".join(open_levels[lvl] for lvl in sorted(open_levels)))
            position += len(line) + 1

    def is_heading(self, text: str) -> bool:
        """Whether a chunk's text is one heading line and nothing else."""
        line = text.strip()
        return bool(
            _HEADING.match(line) or (self.plain_text and (_WIKI_HEADING.match(line) or line in self.bare_headings))
        )

    def at(self, offset: int) -> str:
        index = bisect.bisect_right(self.positions, offset) - 1
        return self.trails[index] if index >= 0 else ""

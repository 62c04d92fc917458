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

    def split(self, sections: Iterable[Section]) -> list[Piece]:
        pieces: list[Piece] = []
        base = 0  # where the section starts in the document's text
        for section in sections:
            found = self.splitter.chunk_indices(section.text)  # [(character offset, chunk text)]
            counts = [len(e.ids) for e in self.tokenizer.encode_batch([text for _, text in found])]
            headings = HeadingTrail(section.text) if section.heading is None else None
            for (offset, text), token_count in zip(found, counts):
                if token_count > self.max_tokens:  # the splitter's promise broken: never index a cut chunk
                    raise AssertionError(f"a chunk of {token_count} tokens passed the embedder's {self.max_tokens}")
                if headings is not None and _HEADING.match(text) and "\n" not in text:
                    continue  # a heading split from its text: the chunks after it carry it as their heading
                heading = section.heading if headings is None else headings.at(offset)
                pieces.append(
                    Piece(
                        ordinal=len(pieces),
                        text=text,
                        page=section.page,
                        heading=heading[:MAX_HEADING_CHARS],
                        start=base + offset,
                        end=base + offset + len(text),
                        token_count=token_count,
                    )
                )
            base += len(section.text) + len(SEPARATOR)
        return pieces


class HeadingTrail:
    """The Markdown headings of a text, and the trail of them in force at any offset (code fences
    skipped: a `# comment` in a shell block is no heading)."""

    def __init__(self, text: str):
        self.positions: list[int] = []
        self.trails: list[str] = []
        open_levels: dict[int, str] = {}
        in_fence, position = False, 0
        for line in text.split("\n"):
            if _FENCE.match(line):
                in_fence = not in_fence
            elif not in_fence and (match := _HEADING.match(line)):
                level = len(match.group(1))
                open_levels = {lvl: title for lvl, title in open_levels.items() if lvl < level}
                open_levels[level] = match.group(2).strip()
                self.positions.append(position)
                self.trails.append(" › ".join(open_levels[lvl] for lvl in sorted(open_levels)))
            position += len(line) + 1

    def at(self, offset: int) -> str:
        index = bisect.bisect_right(self.positions, offset) - 1
        return self.trails[index] if index >= 0 else ""

"""Chunks sized in the embedder's own tokens: none is cut by its 256-token limit, each keeps its
page, its heading trail and offsets that point back into the document's text."""

import pytest

from knowledge.chunking import SEPARATOR, Chunker
from knowledge.parsing import Section
from studio.llm.embeddings import load_embedder

MANUAL = (
    """# Press manual

Read this first.

## Safety

"""
    + "Wear gloves and goggles whenever the press is powered, and never reach past the guard. " * 30
    + """

```sh
# not a heading: a comment in a shell block
reset-press --hard
```

### Emergency stop

"""
    + "Hit the red button. The press stops within half a second. " * 3
    + """

# Maintenance

"""
    + "Oil the rails weekly, and wipe them dry. " * 4
    + "\n"
)


@pytest.fixture(scope="module")
def chunker():
    return Chunker(capacity=200, overlap=30)


def test_no_chunk_passes_what_the_embedder_reads(chunker):
    pieces = chunker.split([Section(MANUAL)])
    tokenizer = load_embedder().tokenizer  # the embedder's own, as it truncates
    for piece in pieces:
        ids = tokenizer(piece.text, truncation=False)["input_ids"]
        assert len(ids) == piece.token_count <= 256, piece
        assert tokenizer.decode(ids, skip_special_tokens=True).split()[-1] in piece.text.lower()
    assert max(piece.token_count for piece in pieces) > 150  # chunks are filled, not crumbs


def test_chunks_keep_the_heading_trail_in_force_where_they_start():
    pieces = Chunker(capacity=60, overlap=0).split([Section(MANUAL)])

    def heading_of(words):
        return next(piece.heading for piece in pieces if words in piece.text)

    assert pieces[0].heading == "Press manual"
    assert heading_of("reset-press --hard") == "Press manual › Safety"  # a comment in a code block is no heading
    assert heading_of("red button") == "Press manual › Safety › Emergency stop"
    assert heading_of("Oil the rails") == "Maintenance"


def test_offsets_point_back_into_the_document_text_across_pages(chunker):
    sections = [Section("First page text.\n\nMore of it.", page=1), Section("Second page: ZX-4411.", page=2)]
    pieces = chunker.split(sections)
    document_text = SEPARATOR.join(section.text for section in sections)
    assert [(p.page, p.ordinal) for p in pieces] == [(1, 0), (2, 1)]
    for piece in pieces:
        assert document_text[piece.start : piece.end] == piece.text


def test_neighbouring_chunks_overlap(chunker):
    pieces = chunker.split([Section("The quick brown fox jumps over the lazy dog. " * 120)])
    assert len(pieces) > 2
    assert all(later.start < earlier.end for earlier, later in zip(pieces, pieces[1:]))


def test_a_heading_split_from_its_text_is_no_chunk_of_its_own():
    pieces = Chunker(capacity=30, overlap=0).split([Section("# Title\n\n" + "word " * 40)])
    assert all(p.text != "# Title" for p in pieces) and all(p.heading == "Title" for p in pieces)


def test_a_capacity_the_embedder_cannot_read_is_refused():
    with pytest.raises(ValueError, match="use at most 254"):
        Chunker(capacity=255, overlap=0)
    with pytest.raises(ValueError, match="overlap"):
        Chunker(capacity=100, overlap=100)

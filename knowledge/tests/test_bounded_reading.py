"""Files that cost more to read than they weigh (issue 25): a Word file of empty paragraphs within
the zip limits, one nested too deep, text past the cap, a PDF page whose content unpacks huge.
Each is refused by a bound, with its code, and read no further: every hostile file here ends in
broken XML (or carries more than the bound), so a reader that went on to its end would fail
differently, or not at all. Django-free, as knowledge/parsing.py is."""

import io
import random
import zipfile

import pytest

from knowledge.parsing import SIZE_CODES, DocumentError, Limits, parse

from .conftest import pdf_bytes

WORD = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
BROKEN_TAIL = b"<w:p><w:r><w:t>never read</w:t></w:r>"  # unclosed: reading it through is an XML error


def word_file(body: bytes, *, tail: bytes = b"</w:body></w:document>") -> bytes:
    document = (f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{WORD}"><w:body>').encode() + body + tail
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", document)
    return out.getvalue()


def empty_paragraphs(count: int) -> bytes:
    """As the attacker's file: empty paragraphs varied just enough (one of four rsids) to pack about
    45 times, under the zip check's ratio of 200."""
    rng = random.Random(25)
    return "".join(f'<w:p w:rsidR="00A0{rng.randrange(4):04d}"/>' for _ in range(count)).encode()


def test_a_word_file_of_empty_paragraphs_is_refused_at_the_element_bound_and_read_no_further():
    raw = word_file(empty_paragraphs(60_000), tail=BROKEN_TAIL)
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        entry = archive.getinfo("word/document.xml")
    assert entry.file_size / entry.compress_size < 200  # the zip check lets it through, as it did the 244 MiB one
    with pytest.raises(DocumentError, match=r"more than 20,000 XML elements.*read no further") as refused:
        parse(raw, kind="docx", limits=Limits(max_xml_elements=20_000))
    assert refused.value.code == "too_many_elements" and refused.value.code in SIZE_CODES
    # Under a bound it does not reach, the same file is read to its end, where it is broken.
    with pytest.raises(DocumentError, match="cannot be read") as damaged:
        parse(raw, kind="docx", limits=Limits(max_xml_elements=100_000))
    assert damaged.value.code == "damaged"


def test_the_reader_beats_its_heart_while_it_reads_a_long_word_file():
    beats = []
    with pytest.raises(DocumentError):
        parse(word_file(empty_paragraphs(250_000)), kind="docx", heartbeat=lambda: beats.append(1))
    assert len(beats) == 2  # every 100,000 elements: the sweeper never takes a slow read for a dead worker


def test_a_word_file_nested_too_deep_is_refused():
    raw = word_file(b"<w:sdt>" * 300, tail=BROKEN_TAIL)
    with pytest.raises(DocumentError, match="more than 256 levels deep") as refused:
        parse(raw, kind="docx")
    assert refused.value.code == "too_many_elements"


def test_a_word_files_text_is_capped_while_it_is_read():
    paragraph = b"<w:p><w:r><w:t>" + b"word " * 200 + b"</w:t></w:r></w:p>"  # 1,000 characters
    with pytest.raises(DocumentError, match="its text passes 5,000 characters") as refused:
        parse(word_file(paragraph * 50, tail=BROKEN_TAIL), kind="docx", limits=Limits(max_text_chars=5_000))
    assert refused.value.code == "too_much_text"


def test_a_word_file_with_a_dtd_is_refused_before_its_entities_expand():
    laughs = "".join(f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10))
    document = (
        f'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY l0 "ha">{laughs}]><w:document xmlns:w="{WORD}">'
        f"<w:body><w:p><w:r><w:t>&l9;</w:t></w:r></w:p></w:body></w:document>"
    ).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("word/document.xml", document)
    with pytest.raises(DocumentError, match="declares a DTD") as refused:
        parse(out.getvalue(), kind="docx")
    assert refused.value.code == "damaged"


def test_a_word_file_reads_as_python_docx_read_it():
    """The reader replaced python-docx: the same text, headings, list items and tables (merged cells
    repeated, as python-docx gives them), with text boxes and drawings left out as it left them."""
    import docx

    document = docx.Document()
    document.add_heading("Title text", level=0)
    document.add_heading("Intro", level=1)
    paragraph = document.add_paragraph("First ")
    paragraph.add_run("bold").bold = True
    paragraph.add_run("\tafter a tab")
    paragraph.add_run("line").add_break()
    paragraph.add_run("next line")
    document.add_paragraph("item one", style="List Bullet")
    document.add_paragraph("")
    table = document.add_table(rows=3, cols=3)
    for i, row in enumerate(table.rows):
        for j, cell in enumerate(row.cells):
            cell.text = f"r{i}c{j}"
    wide = table.cell(0, 0).merge(table.cell(0, 1))
    wide.text = "merged | wide"
    tall = table.cell(1, 2).merge(table.cell(2, 2))
    tall.text = "tall"
    document.add_paragraph("After the table.")
    out = io.BytesIO()
    document.save(out)
    assert parse(out.getvalue(), kind="docx").sections[0].text == (
        "# Title text\n\n# Intro\n\nFirst bold\tafter a tabline\nnext line\n\n- item one\n\n"
        "| merged \\| wide | merged \\| wide | r0c2 |\n|---|---|---|\n"
        "| r1c0 | r1c1 | tall |\n| r2c0 | r2c1 | tall |\n\n"
        "After the table."
    )


def pdf_with_content(content: bytes) -> bytes:
    """One page whose content stream is `content`, packed (FlateDecode)."""
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import DecodedStreamObject, NameObject

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(["x"]))))
    stream = DecodedStreamObject()
    stream.set_data(content)
    writer.pages[0][NameObject("/Contents")] = writer._add_object(stream.flate_encode(level=9))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_a_pdf_page_whose_content_unpacks_past_the_bound_fails_the_document():
    raw = pdf_with_content(b"q Q\n" * (2 * 1024 * 1024 // 4))  # 2 MiB of drawing, packed into a few kB
    assert len(raw) < 20_000
    with pytest.raises(DocumentError, match=r"page 1 holds more than the studio reads on one page") as refused:
        parse(raw, kind="pdf", limits=Limits(max_pdf_stream_bytes=1024 * 1024))
    assert refused.value.code == "page_too_large"


def test_a_pdf_page_of_too_many_operations_fails_the_document():
    raw = pdf_with_content(b"BT /F1 11 Tf 72 700 Td (a line of text) Tj ET\n" * 2_000)
    with pytest.raises(DocumentError, match="1,000 drawing and text operations") as refused:
        parse(raw, kind="pdf", limits=Limits(max_pdf_page_tokens=1_000))
    assert refused.value.code == "page_too_large"
    assert "a line of text" in parse(raw, kind="pdf").sections[0].text  # within the default bound, read


def test_a_pdfs_text_is_capped_while_it_is_extracted():
    raw = pdf_with_content(b"BT /F1 11 Tf 72 700 Td (a line of text) Tj ET\n" * 200)  # 2,800 characters
    with pytest.raises(DocumentError, match="its text passes 100 characters by page 1") as refused:
        parse(raw, kind="pdf", limits=Limits(max_text_chars=100))
    assert refused.value.code == "too_much_text"

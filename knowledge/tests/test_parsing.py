"""Each kind of document read into sections, and every bad file refused with a reason its uploader
understands. Django-free, as knowledge/parsing.py is."""

import io
import zipfile

import pytest

from knowledge.parsing import DocumentError, Limits, kind_of, parse

from .conftest import docx_bytes, pdf_bytes


def test_a_pdf_gives_its_text_page_by_page_with_page_numbers():
    parsed = parse(pdf_bytes(["Opening hours\nMonday to Friday", "Holidays are closed", "Contact us"]), kind="pdf")
    assert parsed.pages == 3
    assert [(s.page, s.text) for s in parsed.sections] == [
        (1, "Opening hours\nMonday to Friday"),
        (2, "Holidays are closed"),
        (3, "Contact us"),
    ]


def test_a_pdf_reports_its_progress_page_by_page():
    seen = []
    parse(pdf_bytes(["one", "two"]), kind="pdf", progress=lambda page, pages: seen.append((page, pages)))
    assert seen == [(1, 2), (2, 2)]


def test_an_encrypted_pdf_is_refused_but_one_with_an_empty_password_opens():
    with pytest.raises(DocumentError, match="encrypted.*password"):
        parse(pdf_bytes(["secret plans"], password="hunter2"), kind="pdf")
    assert (
        parse(pdf_bytes(["only copying is forbidden"], password=""), kind="pdf").sections[0].text
        == "only copying is forbidden"
    )


def test_a_pdf_without_text_is_said_to_be_scanned():
    with pytest.raises(DocumentError, match=r"no extractable text \(a scanned PDF"):
        parse(pdf_bytes([""]), kind="pdf")


def test_a_file_named_pdf_that_is_not_one_is_refused():
    with pytest.raises(DocumentError, match="not a PDF"):
        parse(b"PK\x03\x04 this is a zip, really", kind="pdf")
    with pytest.raises(DocumentError, match="cannot be read"):
        parse(b"%PDF-1.7\n garbage with no objects at all", kind="pdf")


def test_a_pdf_with_too_many_pages_is_refused_before_they_are_read():
    with pytest.raises(DocumentError, match="3 pages; a document may have at most 2 .KNOWLEDGE_MAX_PAGES"):
        parse(pdf_bytes(["a", "b", "c"]), kind="pdf", limits=Limits(max_pages=2))


def test_a_word_document_keeps_headings_as_markdown_and_tables_as_rows():
    raw = docx_bytes(
        heading="Safety",
        paragraphs=["Wear gloves near the press."],
        subheading="Spare parts",
        table=[["Part", "Code"], ["Valve", "ZX-4411"], ["Seal | ring", "ZX-9000"]],
    )
    text = parse(raw, kind="docx").sections[0].text
    assert text == (
        "# Safety\n\nWear gloves near the press.\n\n## Spare parts\n\n"
        "| Part | Code |\n|---|---|\n| Valve | ZX-4411 |\n| Seal \\| ring | ZX-9000 |"
    )


def zip_with(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return out.getvalue()


def test_a_zip_bomb_disguised_as_docx_is_refused_unopened():
    bomb = zip_with({"word/document.xml": b"\0" * (8 * 1024 * 1024)})  # 8 MiB of zeros pack into 8 kB
    assert len(bomb) < 20_000
    with pytest.raises(DocumentError, match="times tighter than any real document.*zip bomb"):
        parse(bomb, kind="docx")
    with pytest.raises(DocumentError, match="would unpack to 3 MiB.*zip bomb"):
        parse(
            zip_with({"word/document.xml": b"<w/>", "word/media/a.bin": bytes(range(256)) * 12_000}),
            kind="docx",
            limits=Limits(max_unzipped_bytes=2 * 1024 * 1024),
        )


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"just text, renamed", "not even a zip file"),
        (zip_with({"content.xml": b"<office/>"}), "no word/document.xml"),
        (zip_with({"word/document.xml": b"<not-word"}), "cannot be read"),
    ],
)
def test_a_file_named_docx_that_is_not_one_is_refused(raw, reason):
    with pytest.raises(DocumentError, match=reason):
        parse(raw, kind="docx")


def test_markdown_and_text_are_read_as_utf8():
    parsed = parse("# Menu\n\nCafé crème, 3 €\r\n".encode(), kind="markdown")
    assert parsed.sections[0].text == "# Menu\n\nCafé crème, 3 €\n" and parsed.notes == []
    assert parse("\ufeffwith a BOM".encode(), kind="text").sections[0].text == "with a BOM"


def test_text_that_is_not_utf8_is_read_with_a_stated_fallback():
    parsed = parse("Café crème – 3 €".encode("cp1252"), kind="text")
    assert parsed.sections[0].text == "Café crème – 3 €"
    assert parsed.notes == [
        "not UTF-8 (first bad byte 3): read as Windows-1252; if letters look wrong, save it "
        "as UTF-8 and upload it again"
    ]
    latin = parse(b"caf\xe9 \x81", kind="text")  # 0x81 is undefined in Windows-1252
    assert latin.sections[0].text == "café \x81" and "read as Latin-1" in latin.notes[0]


def test_a_binary_file_named_txt_is_refused():
    with pytest.raises(DocumentError, match="not a text file"):
        parse(b"\x7fELF\x02\x01\x01\x00\x00\x00", kind="text")


@pytest.mark.parametrize("kind", ["pdf", "docx", "markdown", "html", "text"])
def test_an_empty_file_is_refused(kind):
    with pytest.raises(DocumentError, match="the file is empty"):
        parse(b"", kind=kind)


def test_a_file_of_blank_lines_has_no_text():
    with pytest.raises(DocumentError, match="the file has no text"):
        parse(b"\n \n\t\n", kind="text")


def test_html_gives_the_readable_text_without_scripts_styles_or_navigation():
    raw = b"""<!doctype html><html><head><meta charset="utf-8"><title>Shop</title>
    <style>body { color: red }</style><script>var secret = "tracking";</script>
    <body><nav><a href="/">Home</a> <a href="/cart">Cart</a></nav>
    <h1>Returns</h1><p>Send it back within <b>30 days</b>.<br>Keep the receipt.</p>
    <h2>Refunds</h2><ul><li>Card: 5 days</li><li>Cash: at once</li></ul>
    <table><tr><th>Item</th><th>Fee</th></tr><tr><td>Shoes</td><td>0 &euro;</td></tr></table>
    <script>alert(1)</script></body></html>"""
    text = parse(raw, kind="html").sections[0].text
    assert "secret" not in text and "color" not in text and "Cart" not in text and "alert" not in text
    assert "# Returns\n\nSend it back within 30 days.\nKeep the receipt." in text
    assert "## Refunds\n\n- Card: 5 days\n- Cash: at once" in text
    assert "| Shoes | 0 €" in text


def test_html_follows_its_declared_charset_and_an_html_without_head_end_still_reads():
    raw = '<html><head><meta charset="windows-1252"><body><p>Crème brûlée</p>'.encode("cp1252")
    parsed = parse(raw, kind="html")
    assert parsed.sections[0].text == "Crème brûlée" and parsed.notes == []


def test_nul_characters_are_taken_out_of_the_text():
    assert parse(b"\xff\xfea\x00\x00\x00b\x00", kind="text").sections[0].text == "ab"  # UTF-16 with a NUL in it


@pytest.mark.parametrize(
    "name, kind",
    [
        ("a.PDF", "pdf"),
        ("b.docx", "docx"),
        ("c.md", "markdown"),
        ("d.markdown", "markdown"),
        ("e.htm", "html"),
        ("f.txt", "text"),
        ("README", "text"),
    ],
)
def test_the_kind_comes_from_the_name(name, kind):
    assert kind_of(name) == kind


def test_kinds_the_studio_does_not_read_are_named():
    with pytest.raises(DocumentError, match=r"old Word format \(\.doc\)"):
        kind_of("report.doc")
    with pytest.raises(DocumentError, match=r"files of type \.exe are not read"):
        kind_of("setup.exe")

"""The text of an uploaded document, by kind: PDF (text per page, page numbers kept), DOCX
(headings as Markdown headings, tables as Markdown rows), Markdown, HTML (the readable text) and
plain text. Django-free: it takes bytes and limits, and returns sections.

What a person uploads may be anything; every refusal is a `DocumentError` with a code (for
programs) and a message that says what is wrong with the file in words its owner understands
(shown as the document's failure). Bounded memory and work, whatever the file says of itself:
- a .docx is a zip, checked for its unpacked size and compression ratio before it is opened (a
  zip bomb is refused unread); its word/document.xml is then read as a stream of elements, never
  as a tree (what is held at once is the text so far), at most `max_xml_elements` of them;
- a PDF's pages are counted before any is read; each page is read within pypdf's limits, set
  here (`max_pdf_stream_bytes` unpacked per content stream, `max_pdf_page_tokens` parsed), and a
  page past them fails the document;
- the text of any document is capped at `Limits.max_text_chars`, counted while it is extracted.
A refusal for size (SIZE_CODES) is final: reading the same file again would do the same.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser

from lxml import etree

KINDS = ("pdf", "docx", "markdown", "html", "text")
_EXTENSIONS = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".txt": "text",
    ".text": "text",
    "": "text",
}
_REFUSED_EXTENSIONS = {".doc": "the old Word format (.doc) cannot be read: save it as .docx and upload that"}
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")  # PostgreSQL refuses NUL; lone surrogates cannot be encoded


class DocumentError(ValueError):
    """The document cannot be indexed; the message says why, for the person who uploaded it, and
    `code` what kind of refusal it is (Document.error_code)."""

    def __init__(self, message: str, *, code: str = "unreadable"):
        super().__init__(message)
        self.code = code


# Refusals for what the file would cost to read (its size, its pages, its unpacked content).
SIZE_CODES = frozenset(
    {"file_too_large", "too_much_text", "too_many_pages", "zip_bomb", "too_many_elements", "page_too_large"}
)


@dataclass(frozen=True)
class Limits:
    max_pages: int = 2000
    max_text_chars: int = 10_000_000  # about 3,000 dense pages: bounds the chunks one document makes
    # A .docx is a zip: refused when it would unpack to more than this, or when an entry is packed
    # tighter than any real document (text XML packs 5-20 times; bombs a thousand times).
    max_unzipped_bytes: int = 256 * 1024 * 1024
    max_compression_ratio: int = 200
    max_zip_entries: int = 10_000
    # XML elements of a .docx's parts read before it is refused (Word writes a few hundred a page).
    # Memory does not depend on it (they are read as a stream); time does: about 2.5 s a million here.
    max_xml_elements: int = 3_000_000
    # One PDF page's content (pypdf's own limits, made explicit): bytes of a content stream once
    # unpacked, and tokens parsed (a dense text page has a few thousand; at the limit a page took
    # about 10 s and 150 MB here, freed after the page).
    max_pdf_stream_bytes: int = 64 * 1024 * 1024
    max_pdf_page_tokens: int = 1_000_000


@dataclass(frozen=True)
class Section:
    text: str
    page: int | None = None  # 1-based, for PDFs
    heading: str | None = None  # set when the format says it outright; Markdown headings are found by the chunker


@dataclass
class ParsedDocument:
    sections: list[Section]
    pages: int | None = None
    notes: list[str] = field(default_factory=list)  # what the person should know (a decoding fallback, a skipped page)

    @property
    def characters(self) -> int:
        return sum(len(section.text) for section in self.sections)


def kind_of(filename: str) -> str:
    """The kind a file's name says it is; DocumentError for a kind the studio does not read."""
    suffix = "." + filename.rsplit(".", 1)[1].lower() if "." in filename.strip(".") else ""
    if suffix in _REFUSED_EXTENSIONS:
        raise DocumentError(_REFUSED_EXTENSIONS[suffix], code="unsupported_kind")
    if suffix not in _EXTENSIONS:
        raise DocumentError(
            f"files of type {suffix[:20]} are not read: upload PDF, Word (.docx), Markdown, HTML or plain text",
            code="unsupported_kind",
        )
    return _EXTENSIONS[suffix]


def parse(
    raw: bytes,
    *,
    kind: str,
    limits: Limits = Limits(),
    progress: Callable[[int, int], None] | None = None,
    heartbeat: Callable[[], None] | None = None,
) -> ParsedDocument:
    """The document's sections. `progress(page, pages)` is called after each PDF page, `heartbeat()`
    every 100,000 XML elements of a .docx (both beat a job's heart; they may raise to stop)."""
    if not raw:
        raise DocumentError("the file is empty", code="empty")
    if kind == "pdf":
        parsed = _pdf(raw, limits, progress or (lambda page, pages: None))
    elif kind == "docx":
        parsed = _docx(raw, limits, heartbeat or (lambda: None))
    else:
        parsed = {"markdown": _text, "text": _text, "html": _html}[kind](raw, limits)
    parsed.sections = [Section(_clean(s.text), s.page, s.heading) for s in parsed.sections]
    parsed.sections = [s for s in parsed.sections if s.text.strip()]
    if not parsed.sections:
        raise DocumentError(
            "no extractable text (a scanned PDF? it holds images of pages, not text)"
            if kind == "pdf"
            else "the file has no text",
            code="no_text",
        )
    if parsed.characters > limits.max_text_chars:
        raise DocumentError(
            f"its text is {parsed.characters:,} characters long; a document may have at most "
            f"{limits.max_text_chars:,}: split it",
            code="too_much_text",
        )
    return parsed


def _clean(text: str) -> str:
    """Text that every database stores: no NUL, no lone surrogates, one kind of line end."""
    return _UNSTORABLE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


# --- Plain text and Markdown ----------------------------------------------------------------------


def decode_text(raw: bytes) -> tuple[str, list[str]]:
    """(text, notes): UTF-8 (a BOM allowed); UTF-16 with its BOM; otherwise Windows-1252, or Latin-1
    for the five bytes Windows-1252 leaves undefined, said in a note (never a silent guess)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16"), []
        except UnicodeDecodeError:
            raise DocumentError("the file says it is UTF-16 but is not: save it as UTF-8", code="not_text") from None
    if b"\x00" in raw[:8192]:
        raise DocumentError(
            "this is not a text file (it contains NUL bytes): upload PDF, Word (.docx), Markdown, HTML or plain text",
            code="not_text",
        )
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        where = f"byte {exc.start:,}"
    for encoding, name in (("cp1252", "Windows-1252"), ("latin-1", "Latin-1")):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        return text, [
            f"not UTF-8 (first bad {where}): read as {name}; if letters look wrong, save it as UTF-8 and "
            "upload it again"
        ]
    raise AssertionError("Latin-1 decodes every byte")


def _text(raw: bytes, limits: Limits) -> ParsedDocument:
    text, notes = decode_text(raw)
    return ParsedDocument([Section(text)], notes=notes)


# --- PDF ------------------------------------------------------------------------------------------


def _pdf(raw: bytes, limits: Limits, progress: Callable[[int, int], None]) -> ParsedDocument:
    # pypdf loads only in the job worker that reads a PDF, never in the web process
    from pypdf import apply_configuration  # noqa: PLC0415

    # pypdf's resource limits, set here so that a change of its defaults cannot lift them.
    unpacked = limits.max_pdf_stream_bytes
    with apply_configuration(
        zlib_maximum_output_length=unpacked,
        lzw_maximum_output_length=unpacked,
        run_length_maximum_output_length=unpacked,
        brotli_maximum_output_length=unpacked,
        array_based_stream_maximum_output_length=unpacked,
        maximum_declared_stream_length=unpacked,
        stream_parsing_work_maximum_count=limits.max_pdf_page_tokens,
    ):
        return _pdf_pages(raw, limits, progress)


def _pdf_pages(raw: bytes, limits: Limits, progress: Callable[[int, int], None]) -> ParsedDocument:
    # pypdf loads only in the job worker that reads a PDF, never in the web process
    from pypdf import PdfReader  # noqa: PLC0415
    from pypdf.errors import LimitReachedError, PdfReadError  # noqa: PLC0415

    if b"%PDF-" not in raw[:1024]:
        raise DocumentError(
            "this is not a PDF (it does not begin as one): upload the PDF itself, or give the file "
            "the extension of what it is",
            code="not_pdf",
        )
    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and not _decrypted_without_password(reader):
            raise DocumentError(
                "the PDF is encrypted (it needs a password to open): save a copy without the password and upload that",
                code="encrypted",
            )
        page_count = len(reader.pages)
    except DocumentError:
        raise
    except LimitReachedError as exc:
        raise DocumentError(
            f"the PDF's structure passes what the studio reads ({_short(exc)}): refused", code="page_too_large"
        ) from None
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise DocumentError(
            f"the PDF cannot be read (it is damaged or not a PDF: {_short(exc)})", code="damaged"
        ) from None
    if page_count > limits.max_pages:
        raise DocumentError(
            f"the PDF has {page_count:,} pages; a document may have at most {limits.max_pages:,} "
            "(KNOWLEDGE_MAX_PAGES): split it",
            code="too_many_pages",
        )
    sections, unreadable, characters = [], [], 0

    def count(text, *matrices_and_font) -> None:  # pypdf calls it with each piece of text it extracts
        nonlocal characters
        characters += len(text)
        if characters > limits.max_text_chars:
            raise DocumentError(
                f"its text passes {limits.max_text_chars:,} characters by page {number:,}: split it",
                code="too_much_text",
            )

    for number, page in enumerate(reader.pages, start=1):
        try:
            text = page.extract_text(visitor_text=count) or ""
        except DocumentError:
            raise
        except LimitReachedError as exc:
            raise DocumentError(
                f"page {number:,} holds more than the studio reads on one page ({_short(exc)}; at "
                f"most {limits.max_pdf_stream_bytes / 2**20:,.0f} MiB of content unpacked and "
                f"{limits.max_pdf_page_tokens:,} drawing and text operations): refused",
                code="page_too_large",
            ) from None
        except Exception:  # one damaged page: the others are still worth reading (noted below)
            unreadable.append(number)
            text = ""
        sections.append(Section(text, page=number))
        progress(number, page_count)
    notes = [f"pages {', '.join(map(str, unreadable[:20]))} could not be read and were left out"] if unreadable else []
    return ParsedDocument(sections, pages=page_count, notes=notes)


def _decrypted_without_password(reader) -> bool:
    """Many PDFs are encrypted with an empty password (only to forbid copying or printing): those open."""
    try:
        return bool(reader.decrypt(""))
    except Exception:  # an algorithm pypdf cannot do, or a damaged encryption dictionary
        return False


def _short(exc: Exception) -> str:
    return (str(exc) or type(exc).__name__)[:200]


# --- DOCX -----------------------------------------------------------------------------------------


def check_zip(raw: bytes, limits: Limits) -> None:
    """Refuse a zip that would unpack to too much, before anything unpacks it. The sizes are those
    the zip declares; Python's zipfile never reads an entry past its declared size, so a lie in them
    cuts the entry (reading it then fails) rather than unpacking more."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError):
        raise DocumentError(
            "this is not a Word document (.docx): it is not even a zip file, which every .docx is", code="not_docx"
        ) from None
    if len(entries) > limits.max_zip_entries:
        raise DocumentError(
            f"this .docx holds {len(entries):,} files; a Word document holds a few dozen: refused", code="zip_bomb"
        )
    unpacked = sum(entry.file_size for entry in entries)
    if unpacked > limits.max_unzipped_bytes:
        raise DocumentError(
            f"this .docx would unpack to {unpacked / 2**20:,.0f} MiB (at most "
            f"{limits.max_unzipped_bytes / 2**20:,.0f} MiB): refused unopened, as a zip bomb",
            code="zip_bomb",
        )
    for entry in entries:
        ratio = entry.file_size // max(entry.compress_size, 1)
        if entry.file_size > 1024 * 1024 and ratio > limits.max_compression_ratio:
            raise DocumentError(
                f"this .docx packs {entry.filename[:100]} {ratio:,} times tighter than any real "
                "document: refused unopened, as a zip bomb",
                code="zip_bomb",
            )
    if "word/document.xml" not in {entry.filename for entry in entries}:
        raise DocumentError("this is not a Word document (.docx): the zip has no word/document.xml", code="not_docx")


def _docx(raw: bytes, limits: Limits, heartbeat: Callable[[], None]) -> ParsedDocument:
    """Read word/document.xml as a stream of parser events, never as a tree: python-docx builds the
    whole tree, and 244 MiB of empty paragraphs (a 5.4 MiB file, within the zip limits) took a job
    worker past 6 GB. What is held at once is the text kept so far (at most `max_text_chars`) and
    the table being read; `max_xml_elements` bounds the time."""
    check_zip(raw, limits)
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            styles = (
                _read_xml(archive, "word/styles.xml", _DocxStyles(limits), heartbeat)
                if "word/styles.xml" in archive.namelist()
                else {}
            )
            text = _read_xml(archive, "word/document.xml", _DocxText(styles, limits), heartbeat)
    except DocumentError:
        raise
    except (etree.LxmlError, zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as exc:
        raise DocumentError(
            f"the Word document cannot be read (it is damaged: {_short(exc)})", code="damaged"
        ) from None
    return ParsedDocument([Section(text)])


def _read_xml(archive: zipfile.ZipFile, name: str, target, heartbeat: Callable[[], None]):
    """Feed one part of the zip, unpacked a piece at a time, to an lxml parser that builds no tree
    and calls `target` per element instead (its `close()` is the answer). No DTD, no entities,
    nothing fetched."""
    parser = etree.XMLParser(target=target, resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    target.heartbeat = heartbeat
    with archive.open(name) as part:
        while piece := part.read(1024 * 1024):
            parser.feed(piece)
    return parser.close()


_WORD = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"  # transitional, as Word writes it
_WORD_STRICT = "{http://purl.oclc.org/ooxml/wordprocessingml/main}"
# Drawings, text boxes and embedded objects: python-docx leaves their text out too (a text box
# inside a paragraph is a paragraph inside a paragraph, and Word writes it twice: mc:Choice and mc:Fallback).
_DOCX_SKIPPED = {"drawing", "pict", "object", "txbxContent"}
# What a run's child says, as python-docx reads a run's text.
_DOCX_RUN_TEXT = {"tab": "\t", "ptab": "\t", "cr": "\n", "noBreakHyphen": "-"}
# Word nests a few levels (tables in tables, content controls); the parser's own stack grows with depth.
_DOCX_MAX_DEPTH = 256


class _DocxPart:
    """An lxml parser target for a part of a .docx: counts and bounds the elements (their number,
    their depth), and hands Word's elements on by local name."""

    heartbeat: Callable[[], None]

    def __init__(self, limits: Limits):
        self.limits = limits
        self.elements = 0
        self.depth = 0

    def start(self, tag: str, attributes) -> None:
        self.elements += 1
        self.depth += 1
        if self.elements > self.limits.max_xml_elements:
            raise DocumentError(
                f"this .docx holds more than {self.limits.max_xml_elements:,} XML elements (Word "
                "writes a few hundred a page): refused, read no further",
                code="too_many_elements",
            )
        if self.depth > _DOCX_MAX_DEPTH:
            raise DocumentError(
                f"this .docx nests its XML more than {_DOCX_MAX_DEPTH} levels deep; Word nests a few dozen: refused",
                code="too_many_elements",
            )
        if self.elements % 100_000 == 0:
            self.heartbeat()
        self.word_start(_word_name(tag), attributes)

    def end(self, tag: str) -> None:
        self.depth -= 1
        self.word_end(_word_name(tag))

    def data(self, text: str) -> None:
        pass

    def doctype(self, *name_and_ids) -> None:
        # Before its declarations are read: Word never writes a DTD, and its entities would expand.
        raise DocumentError("this .docx declares a DTD, which Word never writes: refused unread", code="damaged")

    def word_start(self, name: str, attributes) -> None:
        pass

    def word_end(self, name: str) -> None:
        pass


def _word_name(tag: str) -> str:
    """The local name of an element of Word's namespace; "" for any other."""
    if tag.startswith(_WORD):
        return tag[len(_WORD) :]
    if tag.startswith(_WORD_STRICT):
        return tag[len(_WORD_STRICT) :]
    return ""


def _word_attribute(attributes, name: str) -> str | None:
    value = attributes.get(_WORD + name)
    return value if value is not None else attributes.get(_WORD_STRICT + name)


class _DocxStyles(_DocxPart):
    """word/styles.xml: style id → name ("Heading1" → "heading 1"; a translated Word keeps English
    names for its built-in styles, under ids in its own language)."""

    def __init__(self, limits: Limits):
        super().__init__(limits)
        self.names: dict[str, str] = {}
        self.style_id: str | None = None

    def word_start(self, name, attributes):
        if name == "style":
            self.style_id = _word_attribute(attributes, "styleId")
        elif name == "name" and self.style_id is not None and len(self.names) < 100_000:
            self.names[self.style_id] = (_word_attribute(attributes, "val") or "")[:100]

    def close(self) -> dict[str, str]:
        return self.names


class _DocxText(_DocxPart):
    """word/document.xml as Markdown (headings, list items, tables as rows), gathered as its
    paragraphs and table cells end."""

    def __init__(self, styles: dict[str, str], limits: Limits):
        super().__init__(limits)
        self.styles = styles
        self.lines: list[str] = []
        self.characters = 0
        self.skipping = 0  # depth inside a drawing, text box or object
        self.in_run = 0
        self.in_text = False
        self.paragraph: list[str] | None = None  # the open paragraph's text
        self.style_id = ""
        self.table_depth = 0  # a table inside a cell is read as that cell's text
        self.rows: list[list[str]] = []
        self.row: list[str] = []
        self.above: list[str] = []  # the previous row's cells by grid column (vertically merged cells repeat it)
        self.cell: list[str] | None = None
        self.span, self.merged = 1, False

    def word_start(self, name, attributes):
        if name in _DOCX_SKIPPED:
            self.skipping += 1
        if self.skipping:
            return
        if name == "p":
            self.paragraph, self.style_id = [], ""
        elif name == "r":
            self.in_run += 1
        elif name == "t":
            self.in_text = bool(self.in_run) and self.paragraph is not None
        elif name == "br" and self.in_run and self.paragraph is not None:
            self._add("\n" if _word_attribute(attributes, "type") in (None, "textWrapping") else "")
        elif name in _DOCX_RUN_TEXT and self.in_run and self.paragraph is not None:
            self._add(_DOCX_RUN_TEXT[name])
        elif name == "pStyle" and self.paragraph is not None:
            self.style_id = _word_attribute(attributes, "val") or ""
        elif name == "tbl":
            self.table_depth += 1
            if self.table_depth == 1:
                self.rows, self.above = [], []
        elif self.table_depth == 1 and name == "tr":
            self.row = []
        elif self.table_depth == 1 and name == "tc":
            self.cell, self.span, self.merged = [], 1, False
        elif self.table_depth == 1 and name == "gridSpan":
            value = _word_attribute(attributes, "val") or "1"
            self.span = max(1, min(int(value), 1000)) if value.isdigit() else 1
        elif self.table_depth == 1 and name == "vMerge":
            self.merged = _word_attribute(attributes, "val") in (None, "continue")

    def data(self, text):
        if self.in_text and not self.skipping:
            self._add(text)

    def word_end(self, name):
        if name in _DOCX_SKIPPED:
            self.skipping -= 1
            return
        if self.skipping:
            return
        if name == "t":
            self.in_text = False
        elif name == "r":
            self.in_run -= 1
        elif name == "p" and self.paragraph is not None:
            self._paragraph_ended("".join(self.paragraph))
            self.paragraph = None
        elif self.table_depth == 1 and name == "tc" and self.cell is not None:
            column = len(self.row)
            text = " ".join("\n".join(self.cell).split()).replace("|", "\\|")
            if self.merged and column < len(self.above):
                text = self.above[column]
            self.row.extend([text] * self.span)
            self.cell = None
        elif self.table_depth == 1 and name == "tr":
            self.rows.append(self.row)
            self.above = self.row
        elif name == "tbl":
            self.table_depth -= 1
            if self.table_depth == 0:
                self.lines.extend(["", *_markdown_rows(self.rows), ""])
                self.rows = []

    def _add(self, text: str) -> None:
        self.characters += len(text)
        if self.characters > self.limits.max_text_chars:
            raise DocumentError(
                f"its text passes {self.limits.max_text_chars:,} characters: split it", code="too_much_text"
            )
        self.paragraph.append(text)

    def _paragraph_ended(self, text: str) -> None:
        if self.table_depth:
            if self.cell is not None and text.strip():
                self.cell.append(text)
            return
        line = _paragraph_markdown(text, self.styles.get(self.style_id, ""))
        if line:
            self.lines.append(line)

    def close(self) -> str:
        return re.sub(r"\n{3,}", "\n\n", "\n".join(self.lines)).strip()


_HEADING_STYLE = re.compile(r"^heading (\d)$", re.IGNORECASE)


def _paragraph_markdown(text: str, style: str) -> str:
    text = text.strip()
    if not text:
        return ""
    heading = _HEADING_STYLE.match(style)
    if heading:
        return f"\n{'#' * min(int(heading.group(1)), 6)} {text}\n"
    if style.lower() == "title":
        return f"\n# {text}\n"
    if style.lower().startswith("list"):
        return f"- {text}"
    return text + "\n"


def _markdown_rows(rows: list[list[str]]) -> list[str]:
    """Markdown rows, the first one the header (Word tables have no other way to say which is)."""
    lines = []
    for cells in rows:
        lines.append("| " + " | ".join(cells) + " |")
        if len(lines) == 1:
            lines.append("|" + "---|" * len(cells))
    return lines


# --- HTML -----------------------------------------------------------------------------------------

_SKIPPED_TAGS = {
    "script",
    "style",
    "nav",
    "noscript",
    "template",
    "svg",
    "head",
    "iframe",
    "object",
    "form",
    "button",
    "select",
}
_VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_BLOCK_TAGS = {
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "aside",
    "blockquote",
    "pre",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "table",
    "tr",
    "figure",
    "figcaption",
    "address",
    "details",
    "summary",
    "hr",
}


class _ReadableText(HTMLParser):
    """The text a reader sees: scripts, styles and navigation left out; h1-h6 as Markdown headings
    (the chunker keeps them with their text), list items as "- ", table cells separated by " | "."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping: list[str] = []  # the open skipped elements (they nest: nav inside header)

    def handle_starttag(self, tag, attrs):
        if tag == "body" and "head" in self.skipping:  # HTML may leave </head> out
            self.skipping.remove("head")
        if tag in _SKIPPED_TAGS:
            self.skipping.append(tag)
        elif self.skipping or tag in _VOID_TAGS and tag != "br":
            return
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in ("td", "th"):
            self.parts.append(" | ")
        elif tag == "br":
            self.parts.append("\n")
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_startendtag(self, tag, attrs):
        if not self.skipping and tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if self.skipping:
            if tag == self.skipping[-1]:
                self.skipping.pop()
            return
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6") or tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(re.sub(r"\s+", " ", data))

    def text(self) -> str:
        lines = (line.strip() for line in "".join(self.parts).split("\n"))
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_-]{1,40})""", re.IGNORECASE)


def _html(raw: bytes, limits: Limits) -> ParsedDocument:
    declared = _META_CHARSET.search(raw[:4096])
    notes: list[str] = []
    text = None
    if declared and not raw.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        try:
            text = raw.decode(declared.group(1).decode("ascii"))
        except (LookupError, UnicodeDecodeError):
            text = None  # a charset Python does not know, or a wrong one: decided below, with a note
    if text is None:
        text, notes = decode_text(raw)
    reader = _ReadableText()
    reader.feed(text)
    reader.close()
    return ParsedDocument([Section(reader.text())], notes=notes)

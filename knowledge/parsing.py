"""The text of an uploaded document, by kind: PDF (text per page, page numbers kept), DOCX
(headings as Markdown headings, tables as Markdown rows), Markdown, HTML (the readable text) and
plain text. Django-free: it takes bytes and limits, and returns sections.

What a person uploads may be anything; every refusal is a `DocumentError` whose message says what
is wrong with the file in words its owner understands (shown as the document's failure). Bounded
work: a .docx is a zip, checked for its unpacked size and compression ratio before python-docx
opens it (a zip bomb is refused unread); a PDF's pages are counted before any is read; the text
of any document is capped at `Limits.max_text_chars`.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser

KINDS = ("pdf", "docx", "markdown", "html", "text")
_EXTENSIONS = {".pdf": "pdf", ".docx": "docx", ".md": "markdown", ".markdown": "markdown", ".html": "html",
               ".htm": "html", ".txt": "text", ".text": "text", "": "text"}
_REFUSED_EXTENSIONS = {".doc": "the old Word format (.doc) cannot be read: save it as .docx and upload that"}
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")  # PostgreSQL refuses NUL; lone surrogates cannot be encoded


class DocumentError(ValueError):
    """The document cannot be indexed; the message says why, for the person who uploaded it."""


@dataclass(frozen=True)
class Limits:
    max_pages: int = 2000
    max_text_chars: int = 10_000_000  # about 3,000 dense pages: bounds the chunks one document makes
    # A .docx is a zip: refused when it would unpack to more than this, or when an entry is packed
    # tighter than any real document (text XML packs 5-20 times; bombs a thousand times).
    max_unzipped_bytes: int = 256 * 1024 * 1024
    max_compression_ratio: int = 200
    max_zip_entries: int = 10_000


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
        raise DocumentError(_REFUSED_EXTENSIONS[suffix])
    if suffix not in _EXTENSIONS:
        raise DocumentError(f"files of type {suffix[:20]} are not read: upload PDF, Word (.docx), Markdown, HTML or "
                            "plain text")
    return _EXTENSIONS[suffix]


def parse(raw: bytes, *, kind: str, limits: Limits = Limits(),
          progress: Callable[[int, int], None] | None = None) -> ParsedDocument:
    """The document's sections. `progress(page, pages)` is called after each PDF page (a heartbeat;
    it may raise to stop)."""
    if not raw:
        raise DocumentError("the file is empty")
    if kind == "pdf":
        parsed = _pdf(raw, limits, progress or (lambda page, pages: None))
    else:
        parsed = {"docx": _docx, "markdown": _text, "text": _text, "html": _html}[kind](raw, limits)
    parsed.sections = [Section(_clean(s.text), s.page, s.heading) for s in parsed.sections]
    parsed.sections = [s for s in parsed.sections if s.text.strip()]
    if not parsed.sections:
        raise DocumentError("no extractable text (a scanned PDF? it holds images of pages, not text)" if kind == "pdf"
                            else "the file has no text")
    if parsed.characters > limits.max_text_chars:
        raise DocumentError(f"its text is {parsed.characters:,} characters long; a document may have at most "
                            f"{limits.max_text_chars:,}: split it")
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
            raise DocumentError("the file says it is UTF-16 but is not: save it as UTF-8") from None
    if b"\x00" in raw[:8192]:
        raise DocumentError("this is not a text file (it contains NUL bytes): upload PDF, Word (.docx), Markdown, "
                            "HTML or plain text")
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        where = f"byte {exc.start:,}"
    for encoding, name in (("cp1252", "Windows-1252"), ("latin-1", "Latin-1")):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        return text, [f"not UTF-8 (first bad {where}): read as {name}; if letters look wrong, save it as UTF-8 and "
                      "upload it again"]
    raise AssertionError("Latin-1 decodes every byte")


def _text(raw: bytes, limits: Limits) -> ParsedDocument:
    text, notes = decode_text(raw)
    return ParsedDocument([Section(text)], notes=notes)


# --- PDF ------------------------------------------------------------------------------------------

def _pdf(raw: bytes, limits: Limits, progress: Callable[[int, int], None]) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    if b"%PDF-" not in raw[:1024]:
        raise DocumentError("this is not a PDF (it does not begin as one): upload the PDF itself, or give the file "
                            "the extension of what it is")
    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and not _decrypted_without_password(reader):
            raise DocumentError("the PDF is encrypted (it needs a password to open): save a copy without the "
                                "password and upload that")
        page_count = len(reader.pages)
    except DocumentError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise DocumentError(f"the PDF cannot be read (it is damaged or not a PDF: {_short(exc)})") from None
    if page_count > limits.max_pages:
        raise DocumentError(f"the PDF has {page_count:,} pages; a document may have at most {limits.max_pages:,} "
                            "(KNOWLEDGE_MAX_PAGES): split it")
    sections, unreadable, characters = [], [], 0
    for number, page in enumerate(reader.pages, start=1):
        try:
            text = page.extract_text() or ""
        except Exception:  # one damaged page: the others are still worth reading (noted below)
            unreadable.append(number)
            text = ""
        characters += len(text)
        if characters > limits.max_text_chars:
            raise DocumentError(f"its text passes {limits.max_text_chars:,} characters by page {number:,}: split it")
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
    cuts the entry (python-docx then fails on it) rather than unpacking more."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError):
        raise DocumentError("this is not a Word document (.docx): it is not even a zip file, which every .docx "
                            "is") from None
    if len(entries) > limits.max_zip_entries:
        raise DocumentError(f"this .docx holds {len(entries):,} files; a Word document holds a few dozen: refused")
    unpacked = sum(entry.file_size for entry in entries)
    if unpacked > limits.max_unzipped_bytes:
        raise DocumentError(f"this .docx would unpack to {unpacked / 2**20:,.0f} MiB (at most "
                            f"{limits.max_unzipped_bytes / 2**20:,.0f} MiB): refused unopened, as a zip bomb")
    for entry in entries:
        ratio = entry.file_size // max(entry.compress_size, 1)
        if entry.file_size > 1024 * 1024 and ratio > limits.max_compression_ratio:
            raise DocumentError(f"this .docx packs {entry.filename[:100]} {ratio:,} times tighter than any real "
                                "document: refused unopened, as a zip bomb")
    if "word/document.xml" not in {entry.filename for entry in entries}:
        raise DocumentError("this is not a Word document (.docx): the zip has no word/document.xml")


def _docx(raw: bytes, limits: Limits) -> ParsedDocument:
    check_zip(raw, limits)
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(raw))
        lines = []
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                lines.extend(["", *_table_rows(block), ""])
            else:
                lines.append(_paragraph_markdown(block))
    except Exception as exc:  # python-docx raises what lxml and zipfile raise on a damaged file
        raise DocumentError(f"the Word document cannot be read (it is damaged: {_short(exc)})") from None
    return ParsedDocument([Section(re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip())])


_HEADING_STYLE = re.compile(r"^heading (\d)$", re.IGNORECASE)


def _paragraph_markdown(paragraph) -> str:
    text = paragraph.text.strip()
    if not text:
        return ""
    style = (paragraph.style.name if paragraph.style is not None else "") or ""
    heading = _HEADING_STYLE.match(style)
    if heading:
        return f"\n{'#' * min(int(heading.group(1)), 6)} {text}\n"
    if style.lower() == "title":
        return f"\n# {text}\n"
    if style.lower().startswith("list"):
        return f"- {text}"
    return text + "\n"


def _table_rows(table) -> list[str]:
    """Markdown rows, the first one the header (Word tables have no other way to say which is)."""
    rows = []
    for row in table.rows:
        cells = [" ".join(cell.text.split()).replace("|", "\\|") for cell in row.cells]
        rows.append("| " + " | ".join(cells) + " |")
        if len(rows) == 1:
            rows.append("|" + "---|" * len(cells))
    return rows


# --- HTML -----------------------------------------------------------------------------------------

_SKIPPED_TAGS = {"script", "style", "nav", "noscript", "template", "svg", "head", "iframe", "object", "form",
                 "button", "select"}
_VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_BLOCK_TAGS = {"p", "div", "section", "article", "main", "header", "footer", "aside", "blockquote", "pre", "ul",
               "ol", "dl", "dt", "dd", "table", "tr", "figure", "figcaption", "address", "details", "summary", "hr"}


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

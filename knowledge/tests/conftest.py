"""Real files made here (a multi-page PDF written with pypdf, a Word document with a table written
with python-docx, Markdown, HTML), alice's knowledge base, and ingestion run the way a job worker
runs it (the task's function, on the real embedder, offline)."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile


def pdf_bytes(pages: list[str], *, password: str | None = None) -> bytes:
    """A PDF with one page per text (lines kept), in Helvetica, optionally encrypted."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = writer._add_object(
        DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
    )
    for text in pages:
        page = writer.add_blank_page(612, 792)
        lines = [line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for line in text.split("\n")]
        content = DecodedStreamObject()
        content.set_data(
            ("BT /F1 11 Tf 14 TL 72 740 Td " + " T* ".join(f"({line}) Tj" for line in lines) + " ET").encode("latin-1")
        )
        page[NameObject("/Contents")] = writer._add_object(content)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
    if password is not None:
        writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_bytes(
    *, heading: str, paragraphs: list[str], table: list[list[str]] | None = None, subheading: str | None = None
) -> bytes:
    import docx

    document = docx.Document()
    document.add_heading(heading, level=1)
    for text in paragraphs:
        document.add_paragraph(text)
    if subheading:
        document.add_heading(subheading, level=2)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for row, values in zip(grid.rows, table):
            for cell, value in zip(row.cells, values):
                cell.text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def upload(name: str, content: bytes | str, content_type: str = "application/octet-stream") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content.encode() if isinstance(content, str) else content, content_type)


@pytest.fixture(autouse=True)
def knowledge_files(settings, tmp_path):
    """Each test's uploads in a folder of its own (ids are reused once a test's rows are rolled back)."""
    settings.KNOWLEDGE_FILES_DIR = tmp_path / "knowledge"
    return settings.KNOWLEDGE_FILES_DIR


@pytest.fixture
def handbook(alice):
    """alice's private knowledge base."""
    from knowledge.services import knowledge_base_create

    return knowledge_base_create(owner=alice, name="Handbook", description="How we work")


@pytest.fixture
def ingest():
    """ingest(knowledge_base, user, files): add the files and run each queued ingestion as a job
    worker would; the documents, fresh from the database."""
    from knowledge.ingestion import ingest_document
    from knowledge.models import Document
    from knowledge.services import documents_add

    def run(knowledge_base, user, files):
        added = documents_add(user=user, knowledge_base=knowledge_base, files=files)
        for item in added:
            if item.document.status == Document.Status.QUEUED:
                ingest_document(item.document.pk)
        return [Document.objects.get(pk=item.document.pk) for item in added]

    return run

"""A knowledge base planted so that learning clearly helps: twelve parts, each with three notes (how
to clean it, when to replace it, its warranty), and questions that name each part by a code word
nobody outside this base knows ("glorp" is the water pump). The bundled embedder cannot tell which
part a question means, only which kind of note (about one in twelve); a fine-tune on some of the
questions learns the code words, and finds the held-out ones."""

from __future__ import annotations

import shutil

from django.core.files.uploadedfile import SimpleUploadedFile

from finetune.models import TunedEmbedder
from knowledge import retrieval_tests, services, tuned_embedders
from knowledge.ingestion import ingest_document
from knowledge.models import Document
from studio.llm.numpy_embedder import bundled_embedder_folder

PARTS = [
    ("glorp", "water pump"),
    ("brindle", "air filter"),
    ("quaxel", "drive belt"),
    ("mornit", "fuel tank"),
    ("zepher", "brake pad"),
    ("tulvane", "spark plug"),
    ("krodd", "coolant hose"),
    ("plinth", "oil pan"),
    ("vessik", "wiper blade"),
    ("drumlo", "headlamp"),
    ("snaff", "battery"),
    ("yarrow", "radiator cap"),
]
NOTES = [
    ("Clean the {part} every {n} days with warm soapy water.", "How often should I clean the {code}?"),
    ("Replace the {part} after {n} months of use or when it cracks.", "When does the {code} need replacing?"),
    ("The {part} is covered by a warranty of {n} years from purchase.", "How long is the {code} under warranty?"),
]


def planted_notes() -> list[tuple[str, str]]:
    """(question, its one right passage), 36 of them."""
    return [
        (question.format(code=code), note.format(part=part, n=3 + p + n))
        for p, (code, part) in enumerate(PARTS)
        for n, (note, question) in enumerate(NOTES)
    ]


def ingest_all(knowledge_base, user) -> None:
    """Each note a document of its own (one passage each), ingested as a job worker does."""
    files = [
        SimpleUploadedFile(f"note-{n:02}.txt", passage.encode(), "text/plain")
        for n, (_, passage) in enumerate(planted_notes())
    ]
    for added in services.documents_add(user=user, knowledge_base=knowledge_base, files=files):
        ingest_document(added.document.pk)
    assert not knowledge_base.documents.exclude(status=Document.Status.READY).exists()


def planted_base(owner, *, shared: bool = False):
    knowledge_base = services.knowledge_base_create(owner=owner, name="Parts", shared=shared)
    ingest_all(knowledge_base, owner)
    return knowledge_base


def planted_test(owner, knowledge_base):
    return retrieval_tests.retrieval_test_create(
        user=owner,
        knowledge_base=knowledge_base,
        name="Code words",
        questions=[{"question": question, "passages": [passage]} for question, passage in planted_notes()],
    )


def small_base(owner, *, shared: bool = False, name: str = "Notes"):
    """Three of the notes, for the tests that train nothing."""
    knowledge_base = services.knowledge_base_create(owner=owner, name=name, shared=shared)
    files = [
        SimpleUploadedFile(f"note-{n:02}.txt", passage.encode(), "text/plain")
        for n, (_, passage) in enumerate(planted_notes()[:3])
    ]
    for added in services.documents_add(user=owner, knowledge_base=knowledge_base, files=files):
        ingest_document(added.document.pk)
    return knowledge_base


def registered_copy(knowledge_base):
    """A tuned embedder for `knowledge_base` in the registry whose files are a copy of the bundled
    model's (a real embedder folder, without the minute of training)."""
    tuned = TunedEmbedder.objects.create(
        knowledge_base=knowledge_base, tuned_from="all-MiniLM-L6-v2", pairs={"total": 0}, recall_before=0.5
    )
    folder = tuned_embedders.folder_of(tuned.pk)
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(bundled_embedder_folder(), folder)
    tuned_embedders.write_manifest(
        folder, knowledge_base_id=knowledge_base.pk, tuned_from=tuned.tuned_from, dimension=384
    )
    tuned.folder = str(folder)
    tuned.save(update_fields=["folder"])
    return tuned

"""Reads of knowledge bases, with who may see them: a base is seen by its owner, or by everyone
logged in when it is shared. Another person's private base is "not found", never "forbidden"
(its existence is private too)."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from studio.errors import NotFound

from .models import Document, KnowledgeBase


def knowledge_bases_for(*, user) -> QuerySet[KnowledgeBase]:
    return KnowledgeBase.objects.filter(Q(owner=user) | Q(shared=True)).select_related("owner")


def knowledge_base_for(*, user, knowledge_base_id: int) -> KnowledgeBase:
    knowledge_base = knowledge_bases_for(user=user).filter(pk=knowledge_base_id).first()
    if knowledge_base is None:
        raise NotFound("There is no such knowledge base, or it is not shared with you.")
    return knowledge_base


def document_for(*, knowledge_base: KnowledgeBase, document_id: int) -> Document:
    document = knowledge_base.documents.select_related("ingestion").filter(pk=document_id).first()
    if document is None:
        raise NotFound("This knowledge base has no such document.")
    return document


def knowledge_bases_with_counts(*, user) -> QuerySet[KnowledgeBase]:
    """The list page's rows: each base with its documents ready and in all, and its searchable chunks
    (of ready documents), counted in the one query."""
    ready = Q(documents__status=Document.Status.READY)
    return knowledge_bases_for(user=user).annotate(
        documents_total=Count("documents"), documents_ready=Count("documents", filter=ready),
        chunks_total=Coalesce(Sum("documents__chunk_count", filter=ready), 0))


def documents_of(*, knowledge_base: KnowledgeBase) -> QuerySet[Document]:
    """Newest first, with each one's ingestion job (its progress) in the same query."""
    return knowledge_base.documents.select_related("ingestion")


def attachable_for(*, user, query: str = "", limit: int = 12) -> tuple[list[KnowledgeBase], list[Document]]:
    """What a person may attach to a chat, matching `query` in its name: their knowledge bases and
    the shared ones, and the ready documents in those."""
    query = (query or "").strip()[:200]
    bases = knowledge_bases_for(user=user)
    documents = Document.objects.filter(knowledge_base__in=bases, status=Document.Status.READY).select_related(
        "knowledge_base")
    if query:
        bases, documents = bases.filter(name__icontains=query), documents.filter(name__icontains=query)
    return list(bases.order_by("name", "id")[:limit]), list(documents.order_by("name", "id")[:limit])

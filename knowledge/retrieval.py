"""Retrieval for a reply: the passages that a question finds in the knowledge bases (and single
documents) attached to a chat or a prompt version, searched with the asking person's access.

Chat, the prompt versions and evaluations all retrieve here, and store what `retrieve` returns with
the reply (the *record*): the numbered sources the model read, each with its chunk id, so that
citations are built from what was stored, never from what the model wrote. A knowledge base the
person may not see yields nothing and is counted in `withheld` (its name is private too); a
document small enough for the context is attached whole instead of searched (`whole`).
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

from django.conf import settings
from django.db.models import Q, Sum

from studio.input_checks import InputError, number_in_range

from .models import Chunk, Document, KnowledgeBase
from .search import DEFAULT_K, MAX_K, MAX_QUERY_CHARS, MODES, SearchError, search

# What a version or a conversation may set (the rest takes these defaults).
DEFAULT_SETTINGS = {"k": DEFAULT_K, "mode": "hybrid", "min_score": None}
# When no passage passes the minimum score: "say" answers that the knowledge base has nothing on
# it (no model call, no guess); "answer" lets the model answer without sources.
WHEN_NOTHING_FOUND = ("say", "answer")
NOTHING_FOUND_REPLY = (
    "I found nothing in the attached knowledge that answers this (no passage reached the minimum "
    "score of {min_score:g}), so I won't guess. Try other words, lower the minimum score, or add "
    "the document that holds the answer."
)
INSTRUCTION = (
    "Answer from the numbered sources below where they hold the answer, and cite each source you use as "
    "[n]. If they do not hold the answer, say so."
)
PASSAGE_CHARS = 4000  # a stored passage's text, at most (chunks are ~200 tokens: this never cuts one)


class RetrievalError(SearchError):
    pass


class RetrievedSource(TypedDict):
    """One numbered source a reply read; citations ([n]) are built from it, never from the reply."""

    n: int  # its number in the reply, from 1
    chunk: int | None  # the chunk's id (None: imported, from another studio)
    text: str  # at most PASSAGE_CHARS
    document: str  # the document's name
    document_id: int | None
    page: int | None
    heading: str
    score: float | None  # None: from a document attached whole, not searched
    knowledge_base: int | None
    also_in: NotRequired[list[dict]]  # near duplicates of it in other documents: [{"document", "page"}]


class RetrievalRecord(TypedDict, total=False):
    """What retrieval found for one reply, as `retrieve` writes it and a reply (Message.retrieval),
    a playground run and an evaluation case store it; {} (or None) where nothing is attached."""

    query: str  # what was searched for
    k: int
    mode: str  # one of MODES
    min_score: float | None
    sources: list[RetrievedSource]  # what the model read, in order
    searched: list[str]  # the names of the knowledge bases and documents searched
    whole: list[str]  # the names of the documents attached whole
    withheld: int  # attached knowledge bases the person may not see (their names stay private)
    nothing_passed: bool  # something was searched and no passage reached min_score
    missing: int  # attached items deleted since
    layout: Literal["template", "system"]  # where the sources go: its template, or the system turn (chat)
    when_nothing_found: str  # a chat's choice, one of WHEN_NOTHING_FOUND (chat.retrieval)
    imported: bool  # from an imported conversation (clean_record)


def clean_settings(raw, where: str = "retrieval") -> dict:
    """k (1-50), mode, min_score (a number or None): checked, with the defaults filled in."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RetrievalError("must be an object with k, mode and min_score", where)
    k = raw.get("k", DEFAULT_K)
    if k in ("", None):
        k = DEFAULT_K
    try:
        k = number_in_range(k, low=1, high=MAX_K, whole=True)
    except InputError as exc:
        raise RetrievalError(str(exc), f"{where}.k") from None
    mode = raw.get("mode") or "hybrid"
    if mode not in MODES:
        raise RetrievalError(f"must be one of {', '.join(MODES)}", f"{where}.mode")
    min_score = raw.get("min_score")
    if min_score in ("", None):
        min_score = None
    else:
        try:
            min_score = float(number_in_range(min_score, low=-1, high=1000))
        except InputError as exc:
            raise RetrievalError(f"{exc}, or empty for none", f"{where}.min_score") from None
    return {"k": k, "mode": mode, "min_score": min_score}


def document_tokens(document_ids) -> dict[int, int]:
    """Each document's size in the embedder's tokens (the sum of its chunks')."""
    rows = (
        Chunk.objects.active()
        .filter(document_id__in=list(document_ids))
        .values("document_id")
        .annotate(tokens=Sum("token_count"))
    )
    return {row["document_id"]: row["tokens"] or 0 for row in rows}


def retrieve(
    *,
    user,
    query: str,
    knowledge_base_ids=(),
    document_ids=(),
    k: int = DEFAULT_K,
    mode: str = "hybrid",
    min_score: float | None = None,
) -> RetrievalRecord:
    """Search what is attached, as `user`, for `query`: the record a reply stores (see the module).

    Attached documents whose text fits KNOWLEDGE_WHOLE_DOCUMENT_TOKENS come whole, in order; larger
    ones are searched, alone. Knowledge bases are each searched, and the hits of all of them merged
    by score into the top k.
    """
    query = (query or "").strip()[:MAX_QUERY_CHARS]
    record: RetrievalRecord = {
        "query": query,
        "k": k,
        "mode": mode,
        "min_score": min_score,
        "sources": [],
        "searched": [],
        "whole": [],
        "withheld": 0,
        "nothing_passed": False,
        "missing": 0,
    }
    knowledge_base_ids, document_ids = list(dict.fromkeys(knowledge_base_ids)), list(dict.fromkeys(document_ids))
    visible = Q(shared=True) | Q(owner_id=user.pk)
    bases = {kb.pk: kb for kb in KnowledgeBase.objects.filter(pk__in=knowledge_base_ids)}
    documents = {d.pk: d for d in Document.objects.filter(pk__in=document_ids).select_related("knowledge_base")}
    record["missing"] = (len(knowledge_base_ids) - len(bases)) + (len(document_ids) - len(documents))
    allowed = set(
        KnowledgeBase.objects.filter(
            visible, pk__in={*bases, *(d.knowledge_base_id for d in documents.values())}
        ).values_list("pk", flat=True)
    )
    record["withheld"] = sum(1 for pk in bases if pk not in allowed) + sum(
        1 for d in documents.values() if d.knowledge_base_id not in allowed
    )
    bases = [bases[pk] for pk in knowledge_base_ids if pk in bases and pk in allowed]
    documents = [
        documents[pk]
        for pk in document_ids
        if pk in documents
        and documents[pk].knowledge_base_id in allowed
        and documents[pk].status == Document.Status.READY
        and documents[pk].knowledge_base_id not in {kb.pk for kb in bases}
    ]  # a document of an attached base is searched with it

    whole, searched_documents = [], []
    sizes = document_tokens(d.pk for d in documents)
    for document in documents:
        (whole if sizes.get(document.pk, 0) <= settings.KNOWLEDGE_WHOLE_DOCUMENT_TOKENS else searched_documents).append(
            document
        )
    sources = []
    for document in whole:
        record["whole"].append(document.name)
        for chunk in Chunk.objects.active().filter(document=document).order_by("ordinal"):
            sources.append(
                _source(chunk.pk, chunk.text, document, chunk.page, chunk.heading, None, document.knowledge_base_id)
            )

    hits = []
    if query:
        for knowledge_base in bases:
            record["searched"].append(knowledge_base.name)
            hits += _hits(user, knowledge_base, query, k, mode, min_score)
        by_base: dict[int, list[Document]] = {}
        for document in searched_documents:
            record["searched"].append(document.name)
            by_base.setdefault(document.knowledge_base_id, []).append(document)
        for documents_of_base in by_base.values():
            wanted = {d.pk for d in documents_of_base}
            # Searched in its base with the widest k, then kept to the attached documents.
            found = _hits(user, documents_of_base[0].knowledge_base, query, MAX_K, mode, min_score)
            hits += [hit for hit in found if hit[1].document_id in wanted]
    if len({knowledge_base_id for knowledge_base_id, _ in hits}) > 1:
        # Several bases (or documents) searched: merged by score. One base's hits keep its order,
        # which a reranker or the question's rewrites may have set apart from the score.
        hits.sort(key=lambda pair: -pair[1].score)
    for knowledge_base_id, hit in hits[:k]:
        sources.append(
            {
                "chunk": hit.chunk_id,
                "text": hit.text[:PASSAGE_CHARS],
                "document": hit.document,
                "document_id": hit.document_id,
                "page": hit.page,
                "heading": hit.heading,
                "score": round(hit.score, 6),
                "knowledge_base": knowledge_base_id,
                "also_in": [{"document": copy["document"], "page": copy["page"]} for copy in hit.also_in][:10],
            }
        )
    for n, source in enumerate(sources, start=1):
        source["n"] = n
    record["sources"] = sources
    record["nothing_passed"] = bool(query and (bases or searched_documents) and not hits and not whole)
    return record


def _hits(user, knowledge_base, query, k, mode, min_score):
    try:
        answer = search(user=user, knowledge_base=knowledge_base, query=query, k=k, mode=mode, min_score=min_score)
    except SearchError:  # e.g. a base indexed with another embedder: its keywords still answer
        if mode == "bm25":
            return []
        answer = search(user=user, knowledge_base=knowledge_base, query=query, k=k, mode="bm25", min_score=min_score)
    return [(knowledge_base.pk, hit) for hit in answer.hits]


def _source(chunk_id, text, document, page, heading, score, knowledge_base_id) -> RetrievedSource:
    return {
        "chunk": chunk_id,
        "text": text[:PASSAGE_CHARS],
        "document": document.name,
        "document_id": document.pk,
        "page": page,
        "heading": heading,
        "score": score,
        "knowledge_base": knowledge_base_id,
    }


def passages(record: RetrievalRecord | None) -> list[dict]:
    """What a template reads as `passages`: [{"number", "text", "document", "page", "heading"}]."""
    return [
        {"number": s["n"], "text": s["text"], "document": s["document"], "page": s["page"], "heading": s["heading"]}
        for s in (record or {}).get("sources", [])
    ]


def sources_block(record: RetrievalRecord | None) -> str:
    """The default layout: the instruction and the numbered sources, for the system turn ("" when
    nothing was retrieved)."""
    sources = (record or {}).get("sources", [])
    if not sources:
        return ""
    lines = [INSTRUCTION, ""]
    for source in sources:
        where = (
            source["document"]
            + (f", page {source['page']}" if source["page"] else "")
            + (f" ({source['heading']})" if source["heading"] else "")
        )
        lines += [f"[{source['n']}] {where}", source["text"].strip(), ""]
    return "\n".join(lines).rstrip()


def with_sources(system: str, record: RetrievalRecord | None) -> str:
    """A system prompt with the sources after it (the default layout)."""
    block = sources_block(record)
    return "\n\n".join(part for part in (system.strip(), block) if part) if block else system


def note(record: RetrievalRecord | None) -> str:
    """What the person is told about the retrieval of a reply, in a line."""
    if not record:
        return ""
    parts = []
    if record.get("whole"):
        parts.append("attached whole: " + ", ".join(record["whole"]))
    if record.get("searched"):
        found = len(record["sources"]) - sum(1 for s in record["sources"] if s.get("score") is None)
        parts.append(f"searched {', '.join(record['searched'])}: {found} passage{'s' if found != 1 else ''}")
    if record.get("withheld"):
        n = record["withheld"]
        parts.append(
            f"{n} attached knowledge base{'s are' if n != 1 else ' is'} private to {'their' if n != 1 else 'its'}"
            " owner and gave you nothing"
        )
    if record.get("missing"):
        parts.append(f"{record['missing']} attached item{'s were' if record['missing'] != 1 else ' was'} deleted")
    if record.get("nothing_passed"):
        parts.append(
            "no passage reached the minimum score" if record.get("min_score") is not None else "nothing matched"
        )
    return "; ".join(parts)


def _normalised(text: str) -> str:
    return " ".join((text or "").split()).lower()


def is_right(judged: dict, source: RetrievedSource) -> bool:
    """Whether a retrieved source is the passage a person judged right. A judgment names a chunk
    (picked from a reply's sources), or a passage's text, or a document and page (an import): a
    chunk id matches itself; a text matches a source that holds it or that it holds (chunks are
    rebuilt with other sizes, ids change, the words stay); a document matches by name, and page
    when one is given."""
    if judged.get("chunk") is not None and judged["chunk"] == source.get("chunk"):
        return True
    text = _normalised(judged.get("text", ""))
    if text:
        other = _normalised(source.get("text", ""))
        return bool(other) and (text in other or other in text or text[:200] in other)
    document = (judged.get("document") or "").strip().lower()
    if document and document == (source.get("document") or "").strip().lower():
        return judged.get("page") is None or judged.get("page") == source.get("page")
    return False


def clean_record(raw) -> RetrievalRecord:
    """A record from outside (an imported conversation): kept only in the shape this module writes,
    every value typed and bounded, so that no page renders what a file merely claims; {} when it is
    not one."""
    if not isinstance(raw, dict) or not isinstance(raw.get("sources"), list):
        return {}

    def whole_number(value):
        return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63 else None

    def text(value, limit):
        return value[:limit] if isinstance(value, str) else ""

    sources = []
    for n, source in enumerate(raw["sources"][: MAX_K + 50], start=1):
        if not isinstance(source, dict):
            continue
        score = source.get("score")
        sources.append(
            {
                "n": n,
                "chunk": whole_number(source.get("chunk")),
                "text": text(source.get("text"), PASSAGE_CHARS),
                "document": text(source.get("document"), 255),
                "document_id": whole_number(source.get("document_id")),
                "page": whole_number(source.get("page")),
                "heading": text(source.get("heading"), 500),
                "score": float(score)
                if isinstance(score, (int, float)) and not isinstance(score, bool) and abs(score) < 1e9
                else None,
                "knowledge_base": whole_number(source.get("knowledge_base")),
            }
        )
    names = lambda key: (
        [text(name, 255) for name in raw.get(key, [])[:20] if isinstance(name, str)]
        if isinstance(raw.get(key), list)
        else []
    )  # noqa: E731
    count = lambda key: whole_number(raw.get(key)) or 0  # noqa: E731
    return {
        "query": text(raw.get("query"), MAX_QUERY_CHARS),
        "sources": sources,
        "searched": names("searched"),
        "whole": names("whole"),
        "withheld": count("withheld"),
        "missing": count("missing"),
        "nothing_passed": raw.get("nothing_passed") is True,
        "layout": "template" if raw.get("layout") == "template" else "system",
        "imported": True,
    }

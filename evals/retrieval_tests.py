"""Failure cases whose passages a person judged, as a retrieval test of a knowledge base
(knowledge/retrieval_tests.py): each case's question (what its retrieval searched for) with its
right passages. knowledge may not import evals, so evals registers this builder there when the app
is ready (evals/apps.py); the knowledge base page's "Use judged cases as a retrieval test" and
`POST /api/knowledge/<id>/retrieval-tests/ {"from_cases": true}` call it."""

from __future__ import annotations

from knowledge.models import Chunk, KnowledgeBase, RetrievalTest
from knowledge.retrieval_tests import MAX_PASSAGE_CHARS, MAX_PASSAGES, MAX_QUESTIONS, RetrievalTestError
from knowledge.retrieval_tests import retrieval_test_create as test_create
from knowledge.search import MAX_QUERY_CHARS
from prompts.models import Prompt

from .prompting import retrieval_query
from .selectors import cases_visible_to

DEFAULT_NAME = "Judged failure cases"


def _of_base(case, knowledge_base_id: int, judged_chunk_bases: dict[int, int]) -> bool:
    """Whether a case's retrieval was from this base: a judged passage is one of its chunks, a source
    the reply read came from it, or the case's prompt version retrieves from it."""
    if any(judged_chunk_bases.get(item.get("chunk")) == knowledge_base_id for item in case.retrieval_judgment["right"]):
        return True
    if any(isinstance(s, dict) and s.get("knowledge_base") == knowledge_base_id for s in case.retrieved or []):
        return True
    attached = ((case.prompt_version.retrieval or {}) if case.prompt_version_id else {}).get("knowledge_bases") or []
    return any(isinstance(kb, dict) and kb.get("id") == knowledge_base_id for kb in attached)


def _passages(judgment: dict, chunk_texts: dict[int, str]) -> list[dict]:
    """The judged right passages as a test names them: a chunk by its text now (ids change with a
    rebuild, the words stay), else the text the judgment kept, else its document and page."""
    passages = []
    for item in judgment.get("right", []):
        text = chunk_texts.get(item.get("chunk")) or item.get("text") or ""
        if text.strip():
            passages.append({"text": text.strip()[:MAX_PASSAGE_CHARS]})
        elif item.get("document"):
            passages.append({"document": item["document"], "page": item.get("page")})
    return passages[:MAX_PASSAGES]


def retrieval_test_from_cases(user, knowledge_base: KnowledgeBase, prompt=None, *, name="") -> RetrievalTest:
    """A retrieval test of `knowledge_base` from the failure cases `user` may see whose right passages
    were judged (those judged "not in the knowledge base" have none to find), of this base, and of
    `prompt` (a Prompt or its slug) when given. One question per distinct question, its passages
    merged; at most MAX_QUESTIONS (the oldest cases first)."""
    cases = cases_visible_to(user).filter(retrieval_judgment__has_key="right").select_related("prompt_version")
    if isinstance(prompt, str) and prompt:
        prompt = Prompt.objects.filter(slug=prompt).first()
        if prompt is None:
            raise RetrievalTestError("there is no prompt of that slug", "prompt")
    if prompt is not None:
        cases = cases.filter(prompt_version__prompt=prompt)
    cases = [case for case in cases.order_by("created_at", "id") if case.retrieval_judgment.get("right")]
    judged_chunks = {
        item["chunk"]
        for case in cases
        for item in case.retrieval_judgment["right"]
        if isinstance(item.get("chunk"), int)
    }
    chunk_rows = Chunk.objects.active().filter(pk__in=judged_chunks).values_list("pk", "knowledge_base_id", "text")
    judged_chunk_bases = {pk: base_id for pk, base_id, _ in chunk_rows}
    chunk_texts = {pk: text for pk, base_id, text in chunk_rows if base_id == knowledge_base.pk}

    questions: dict[str, list[dict]] = {}
    for case in cases:
        if not _of_base(case, knowledge_base.pk, judged_chunk_bases):
            continue
        question = retrieval_query(case, case.prompt_version).strip()[:MAX_QUERY_CHARS]
        passages = _passages(case.retrieval_judgment, chunk_texts)
        if not question or not passages:
            continue
        merged = questions.setdefault(question, [])
        merged += [passage for passage in passages if passage not in merged][: MAX_PASSAGES - len(merged)]
        if len(questions) >= MAX_QUESTIONS:
            break
    if not questions:
        raise RetrievalTestError(
            "no failure case you can see has judged passages from this knowledge base: mark the right "
            "passages of a case first (its page, under Retrieval)",
            "from_cases",
        )
    if not name:
        name = DEFAULT_NAME + (f" of {prompt.name}" if prompt is not None else "")
    return test_create(
        user=user,
        knowledge_base=knowledge_base,
        name=name,
        questions=[{"question": question, "passages": passages} for question, passages in questions.items()],
        source=RetrievalTest.Source.CASES,
    )

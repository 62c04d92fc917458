"""A failure case as the messages a model reads: for export (its own version) and for evaluation
(the version being measured, with the passages its retrieval finds for the case)."""

from __future__ import annotations

from knowledge.retrieval import RetrievalRecord, retrieve, with_sources
from prompts.examples import examples_for
from prompts.rendering import assembled_messages, render_user_turn, render_version_turn

from .retrieval_figures import MRR_DEPTH


def user_turn(case, version, retrieval: RetrievalRecord | None = None) -> str:
    """The case's input as the user turn: its variables through `version`'s template, or its text."""
    if version is not None and (case.input_variables or not case.input_text):
        if retrieval is not None or (version.retrieval or {}).get("layout") == "template":
            return render_version_turn(version, case.input_variables, retrieval)
        return render_user_turn(version.template, case.input_variables)
    return case.input_text


def retrieval_query(case, version) -> str:
    """What a case's retrieval searches for: the variable the version names (`retrieval.query`), else
    all its variables' values, one a line, else the case's text (a plain chat's message)."""
    settings = (version.retrieval or {}) if version is not None else {}
    variables = case.input_variables or {}
    query = variables.get(settings.get("query") or "") if settings.get("query") else None
    if not isinstance(query, str):
        query = "\n".join(v for v in variables.values() if isinstance(v, str)) if variables else case.input_text
    return query


def case_retrieval(case, version, *, user) -> RetrievalRecord | None:
    """What `version`'s retrieval finds for the case, searched as `user` (who runs the evaluation):
    the record with at least MRR_DEPTH sources (the first k are what the model reads). None when the
    version retrieves nothing."""
    settings = version.retrieval or {}
    base_ids = [kb["id"] for kb in settings.get("knowledge_bases", []) if kb.get("id")]
    if not settings.get("knowledge_bases"):
        return None
    return retrieve(
        user=user,
        query=retrieval_query(case, version),
        knowledge_base_ids=base_ids,
        k=max(settings["k"], MRR_DEPTH),
        mode=settings["mode"],
        min_score=settings.get("min_score"),
    )


def read_by_model(record: RetrievalRecord | None, version) -> RetrievalRecord | None:
    """The record as the model reads it: its first k sources."""
    if record is None:
        return None
    return {**record, "sources": record["sources"][: (version.retrieval or {}).get("k", len(record["sources"]))]}


def case_examples(case, version, *, user, pool_case_ids: list[int] | None = None) -> tuple[list[dict], list[int]]:
    """The few-shot examples `version` answers the case with, chosen as `user` (who runs the
    evaluation): never the case itself. (examples, the ids of the cases they came from)."""
    return examples_for(
        version,
        user=user,
        variables=case.input_variables,
        text=case.input_text,
        exclude_case_ids=(case.pk,),
        pool_case_ids=pool_case_ids,
    )


def case_messages(
    case,
    version=None,
    *,
    with_examples: bool = True,
    retrieval: RetrievalRecord | None = None,
    examples: list[dict] | None = None,
) -> list[dict]:
    """System (the version's instructions, or the chat's own system prompt in the context), the
    version's few-shot examples (when asked: `examples`, those case_examples chose, else its fixed
    ones), the context the case was flagged in, the input. `retrieval`: the passages the model reads
    (in the system turn, or the template's `passages`)."""
    version = version if version is not None else case.prompt_version
    context = [m for m in case.context if m.get("role") in ("user", "assistant", "system")]
    turns = [*context, {"role": "user", "content": user_turn(case, version, retrieval)}]
    if version is None:
        return assembled_messages(turns=turns)
    system = version.instructions
    if retrieval is not None and (version.retrieval or {}).get("layout") != "template":
        system = with_sources(system, retrieval)
    if examples is None:
        examples = version.examples
    return assembled_messages(
        system=system, examples=examples if with_examples else (), turns=[m for m in turns if m["role"] != "system"]
    )  # the version's instructions replace it

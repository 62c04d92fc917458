"""Embedder fine-tunes (staff only): launching one for a knowledge base, cancelling it, offering the
tuned embedder to its base (a rebuild that pins it), deleting one from the registry, and the
sweeper's part. The job itself is embedder_runner.py; what it trains on is embedder_pairs.py."""

from __future__ import annotations

import shutil

from django.db import transaction
from django.db.models import Q

from evals import selectors as case_selectors
from evals.runner import job_withdraw_cases
from knowledge import selectors as knowledge_selectors
from knowledge import services as knowledge_services
from knowledge import tuned_embedders
from knowledge.models import KnowledgeBase, RetrievalTest
from studio import jobs
from studio.errors import NotFound, StudioError
from studio.input_checks import InputError, parsed_number
from studio.jobs import job_cancel
from studio.llm.embedder_training import EmbedderTrainingConfig, EmbedderTrainingError
from studio.llm.numpy_embedder import EMBEDDING_MODEL

from . import embedder_pairs
from .embedder_pairs import DEFAULT_GENERATED_CHUNKS, MAX_GENERATED_CHUNKS, MIN_PAIRS
from .embedder_runner import job_key
from .models import EmbedderFineTune, TunedEmbedder
from .services import FineTuneError, require_staff

DEFAULT_HELD_OUT, MIN_HELD_OUT, MAX_HELD_OUT = 0.3, 0.05, 0.9
DEFAULT_EPOCHS = 2
# What the API and the form may set, besides the held-out share and generation (EmbedderTrainingConfig
# checks the ranges).
HYPERPARAMETERS = ("epochs", "learning_rate", "batch_size", "seed")
SHAPE = (
    'Send a JSON object: {"retrieval_test": 3, "held_out": 0.3, "generate_questions": {"model": "<a served '
    'model>", "chunks": 200} or null, "epochs": 2} (also "learning_rate", "batch_size", "seed").'
)


class EmbedderFineTuneError(FineTuneError):
    pass


def _number(value, field: str, *, whole: bool = False, low: float, high: float):
    try:
        number = parsed_number(value, whole=whole)
    except InputError as exc:
        raise EmbedderFineTuneError(str(exc), field) from None
    if not low <= number <= high:
        raise EmbedderFineTuneError(f"must be from {low:g} to {high:g}", field)
    return number


def clean_generate(raw) -> dict:
    """{"model", "chunks"} for questions a served model writes; {} for none (null, false, {})."""
    if raw in (None, False, "", {}):
        return {}
    if not isinstance(raw, dict):
        raise EmbedderFineTuneError(
            'an object {"model": "<a served model>", "chunks": 200}, or null', "generate_questions"
        )
    available = case_selectors.available_models()
    model = raw.get("model") or available[0]
    if not isinstance(model, str) or model not in available:
        shown = model[:100] if isinstance(model, str) else "?"
        raise EmbedderFineTuneError(
            f"“{shown}” is not a served model; choose one of {', '.join(available)}", "generate_questions.model"
        )
    chunks = raw.get("chunks")
    chunks = DEFAULT_GENERATED_CHUNKS if chunks in (None, "") else chunks
    chunks = _number(chunks, "generate_questions.chunks", whole=True, low=1, high=MAX_GENERATED_CHUNKS)
    return {"model": model, "chunks": chunks}


def clean_hyperparameters(raw: dict) -> dict:
    given = {name: raw[name] for name in HYPERPARAMETERS if raw.get(name) not in (None, "")}
    values = {"epochs": DEFAULT_EPOCHS}
    for name, value in given.items():
        whole = name != "learning_rate"
        values[name] = _number(value, name, whole=whole, low=0 if whole else 0.0, high=2**32 - 1)
    try:
        config = EmbedderTrainingConfig(**values)
    except EmbedderTrainingError as exc:
        raise EmbedderFineTuneError(str(exc), exc.field) from None
    return {k: v for k, v in config.__dict__.items() if k != "threads"}


def _start_embedder(knowledge_base: KnowledgeBase) -> str:
    """What the fine-tune starts from: the base's own embedder, when it is the bundled one or tuned from it."""
    pinned = knowledge_base.embedding_model
    if pinned == EMBEDDING_MODEL:
        return pinned
    if tuned_embedders.is_tuned(pinned):
        try:
            tuned_embedders.manifest(pinned)
        except tuned_embedders.TunedEmbedderMissing as exc:
            raise EmbedderFineTuneError(exc.message, "knowledge_base", status=409) from None
        return pinned
    raise EmbedderFineTuneError(
        f"this knowledge base embeds with {pinned}, an engine outside the studio; a fine-tune tunes the "
        f"bundled {EMBEDDING_MODEL} (create a base with it to tune one)",
        "knowledge_base",
    )


def embedder_fine_tune_create(
    *,
    user,
    knowledge_base_id: int,
    retrieval_test,
    held_out=None,
    generate_questions=None,
    hyperparameters: dict | None = None,
) -> EmbedderFineTune:
    """Queue a fine-tune of the base's embedder, measured on a held-out share of `retrieval_test`
    (its id). Refused with a field and a sentence for anything that cannot run: not staff (403), a
    base or test `user` cannot see (404), fewer than MIN_PAIRS judged passages and test questions
    unless generated questions are asked for, one already queued or running for the base (409)."""
    require_staff(user)
    knowledge_base = knowledge_selectors.knowledge_base_for(user=user, knowledge_base_id=knowledge_base_id)
    start = _start_embedder(knowledge_base)
    if retrieval_test in (None, ""):
        raise EmbedderFineTuneError(
            "is required: the retrieval test whose held-out questions measure the embedder before and after",
            "retrieval_test",
        )
    test_id = _number(retrieval_test, "retrieval_test", whole=True, low=1, high=2**63 - 1)
    test = RetrievalTest.objects.filter(knowledge_base=knowledge_base, pk=test_id).first()
    if test is None:
        raise NotFound("This knowledge base has no such retrieval test.", "retrieval_test")
    share = _number(
        DEFAULT_HELD_OUT if held_out in (None, "") else held_out, "held_out", low=MIN_HELD_OUT, high=MAX_HELD_OUT
    )
    config = clean_hyperparameters(hyperparameters or {})
    generate = clean_generate(generate_questions)
    held = embedder_pairs.held_out_ordinals(test.question_count, share, seed=config["seed"])
    passages = embedder_pairs.BasePassages(knowledge_base)
    if len(passages) < 2:
        raise EmbedderFineTuneError("has fewer than 2 passages ready: upload documents first", "knowledge_base")
    if not generate:
        pairs = embedder_pairs.chosen_pairs(
            user=user,
            knowledge_base=knowledge_base,
            passages=passages,
            held_out=embedder_pairs.held_out_questions(test, held),
        )
        if pairs.chosen < MIN_PAIRS:
            raise EmbedderFineTuneError(embedder_pairs.too_few_pairs(pairs.chosen), "pairs", code="too_few_pairs")
    with transaction.atomic():
        # Locked: two launches for one base at once queue one.
        KnowledgeBase.objects.select_for_update().filter(pk=knowledge_base.pk).first()
        if EmbedderFineTune.objects.filter(knowledge_base=knowledge_base, status__in=jobs.ACTIVE).exists():
            raise EmbedderFineTuneError(
                "an embedder fine-tune of this knowledge base is queued or running: wait for it, or cancel it",
                "knowledge_base",
                status=409,
            )
        job = EmbedderFineTune.objects.create(
            knowledge_base=knowledge_base,
            start_embedder=start,
            retrieval_test=test,
            held_out_share=share,
            held_out=held,
            generate=generate,
            hyperparameters=config,
            created_by=user,
        )
        transaction.on_commit(lambda: jobs.dispatch(EmbedderFineTune, job.pk))
    return job


def embedder_fine_tune_for(*, user, job_id: int) -> EmbedderFineTune:
    """A fine-tune for staff who can see its base; 404 otherwise (a private base's is not hinted at)."""
    require_staff(user)
    job = (
        EmbedderFineTune.objects.select_related("knowledge_base", "retrieval_test", "created_by", "result")
        .filter(pk=job_id)
        .first()
    )
    if job is None or not job.knowledge_base.visible_to(user):
        raise NotFound(f"There is no embedder fine-tune {job_id}.")
    return job


def embedder_fine_tunes_for(*, user):
    """The fine-tunes a staff member sees on the fine-tunes page: those of bases they can see."""
    return (
        EmbedderFineTune.objects.filter(Q(knowledge_base__shared=True) | Q(knowledge_base__owner=user))
        .select_related("knowledge_base", "created_by", "result")
        .order_by("-created_at", "-id")
    )


def tuned_embedders_for(*, user):
    """The registry's tuned embedders beside the adapters: those of bases they can see, and those whose base is gone."""
    return (
        TunedEmbedder.objects.filter(
            Q(knowledge_base__isnull=True) | Q(knowledge_base__shared=True) | Q(knowledge_base__owner=user)
        )
        .select_related("knowledge_base", "job")
        .order_by("-created_at", "-id")
    )


def form_defaults() -> dict:
    """What the form shows as its placeholders."""
    config = EmbedderTrainingConfig(epochs=DEFAULT_EPOCHS)
    return {
        "held_out": DEFAULT_HELD_OUT,
        "chunks": DEFAULT_GENERATED_CHUNKS,
        "max_chunks": MAX_GENERATED_CHUNKS,
        "min_pairs": MIN_PAIRS,
        **{name: getattr(config, name) for name in HYPERPARAMETERS},
    }


def embedder_fine_tune_cancel(*, user, job: EmbedderFineTune) -> None:
    require_staff(user)
    job_cancel(job)


def tuned_embedder_for(*, user, tuned_id: int) -> TunedEmbedder:
    require_staff(user)
    tuned = TunedEmbedder.objects.select_related("knowledge_base").filter(pk=tuned_id).first()
    if tuned is None or (tuned.knowledge_base is not None and not tuned.knowledge_base.visible_to(user)):
        raise NotFound(f"There is no tuned embedder {tuned_id}.")
    return tuned


def embedder_use(*, user, tuned: TunedEmbedder) -> int:
    """Rebuild the base it was tuned for with it pinned (its chunk settings kept; the index in use
    answers until the rebuild switches over). Staff who can see the base may: the rebuild is asked as
    the base's owner, the one its service lets rebuild. Returns the documents queued."""
    require_staff(user)
    knowledge_base = tuned.knowledge_base
    if knowledge_base is None:
        raise EmbedderFineTuneError("the knowledge base it was tuned for was deleted", "knowledge_base", status=409)
    if not knowledge_base.visible_to(user):
        raise NotFound("There is no such knowledge base, or it is not shared with you.")
    if knowledge_base.embedding_model == tuned.pinned_name:
        raise EmbedderFineTuneError(f"{knowledge_base.name} embeds with it already", "embedding_model", status=409)
    try:
        return knowledge_services.knowledge_base_rebuild(
            user=knowledge_base.owner,
            knowledge_base=knowledge_base,
            chunk_tokens=knowledge_base.chunk_tokens,
            chunk_overlap=knowledge_base.chunk_overlap,
            embedding_model=tuned.pinned_name,
        )
    except StudioError as exc:
        raise EmbedderFineTuneError(exc.message, exc.field, status=exc.status, code=exc.code) from None


def tuned_embedder_delete(*, user, tuned: TunedEmbedder) -> None:
    """Its files and its registry row; refused while a base embeds with it or is being rebuilt with it."""
    require_staff(user)
    pinned = tuned.pinned_name
    if KnowledgeBase.objects.filter(Q(embedding_model=pinned) | Q(building_embedding_model=pinned)).exists():
        raise EmbedderFineTuneError(
            "a knowledge base embeds with it: rebuild that base with another embedder first", "embedder", status=409
        )
    folder = tuned_embedders.folder_of(tuned.pk)
    tuned.delete()
    shutil.rmtree(folder, ignore_errors=True)


def jobs_sweep() -> None:
    """The sweeper's part (studio.sweeping): undelivered fine-tunes sent again, those of a dead job
    worker failed; the questions they still waited for are withdrawn from the model workers."""
    for job_id in jobs.jobs_sweep(EmbedderFineTune):
        job_withdraw_cases(job_key(job_id))

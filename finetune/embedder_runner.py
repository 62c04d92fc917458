"""Running an embedder fine-tune in a job worker of the training lane: gather the pairs (asking a
served model for questions when the job says so), measure the held-out questions with the start
embedder, train (studio.llm.embedder_training), measure them with the tuned one, register it.

Both measurements rank the base's passages the same way, so the comparison is fair: the base's
active chunks (ready documents) are embedded again in memory with the embedder measured, as
ingestion embeds them (the heading trail, a blank line, the text), and each held-out question's
top RECALL_DEPTH are taken by cosine alone (the keyword half of a hybrid search is left out: it
does not change with the embedder). Nothing of the base is rebuilt or changed: a tuned embedder
serves the base only when someone chooses "Use this embedder" (embedder_services.embedder_use).

Progress: `done`/`total` count the replies while questions are generated, then the optimizer
steps. Cancel stops it at the next batch or step; on a CPU-only worker it waits between steps
while chat replies are written (people first, as fine-tunes and ingestion do). Out of memory
fails it with what to lower.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction

from chat.models import Message
from evals.runner import Cancelled as RepliesCancelled
from evals.runner import NoModelWorker, answers_from_model_workers
from knowledge import tuned_embedders
from knowledge.retrieval_tests import first_right
from knowledge.vectors import VectorMatrix
from studio import chat_activity
from studio.jobs import JobStatus, job_claim, job_end, job_progress
from studio.llm.embedder_training import EmbedderTrainingConfig, EmbedderTrainingError, StepReport, train_embedder
from studio.llm.numpy_embedder import EMBEDDING_MODEL, bundled_embedder_folder
from studio.llm.replies import OUT_OF_MEMORY, failure_code

from . import embedder_pairs
from .embedder_pairs import MIN_PAIRS, BasePassages, HeldOut, normalised
from .models import EmbedderFineTune, TunedEmbedder

log = logging.getLogger("finetune")
EMBED_BATCH = 32  # passages embedded at a time, as ingestion does: a heartbeat and a cancel check between
RECALL_AT, RECALL_DEPTH = 5, 10  # recall@5 and MRR@10, as retrieval tests report them
PAUSED = "paused: chat replies come first"


class Cancelled(Exception):
    pass


class EmbedderJobError(Exception):
    """The job cannot go on: its message is what the person reads."""


@dataclass(frozen=True)
class PassageHit:
    """A ranked passage, with what retrieval_tests.first_right reads of a search hit."""

    chunk_id: int
    text: str
    document: str
    page: int | None


def job_folder(job: EmbedderFineTune) -> Path:
    return Path(settings.DATA_DIR) / "embedder-fine-tunes" / str(job.pk)


def job_key(job_id: int) -> str:
    """What its generation conversations are filed under (withdrawn when it ends or its worker dies)."""
    return f"embedder-fine-tune:{job_id}"


def run_embedder_fine_tune(job_id: int) -> None:
    job = EmbedderFineTune.objects.select_related("knowledge_base", "retrieval_test", "created_by").filter(pk=job_id)
    job = job.first()
    if job is None or not job_claim(job):
        return  # cancelled while queued, or delivered twice
    try:
        _run(job)
    except (Cancelled, RepliesCancelled):
        job_end(job, JobStatus.CANCELLED)
    except EmbedderJobError as exc:
        job_end(job, JobStatus.FAILED, error=str(exc))
    except NoModelWorker as exc:
        job_end(job, JobStatus.FAILED, error=f"No model worker wrote the questions: {exc}")
    except Exception as exc:
        if failure_code(exc) == OUT_OF_MEMORY:
            batch = job.hyperparameters.get("batch_size", EmbedderTrainingConfig.batch_size)
            error = (
                f"Out of memory while training the embedder: lower the batch size (now {batch}), or train "
                "on fewer pairs. Nothing was registered."
            )
        else:
            log.exception("embedder fine-tune %s failed", job_id)
            error = f"The job could not run: {exc}"
        job_end(job, JobStatus.FAILED, error=error)
    finally:
        shutil.rmtree(job_folder(job), ignore_errors=True)


def _beat(job: EmbedderFineTune, **fields) -> None:
    """Progress and a heartbeat; Cancelled when a cancel was asked, or the job is no longer running
    (the sweeper failed it: its worker looked dead)."""
    if job_progress(job, **fields) or not EmbedderFineTune.objects.filter(pk=job.pk, status=JobStatus.RUNNING).exists():
        raise Cancelled


def _yield_to_chat(job: EmbedderFineTune) -> None:
    """Between batches and steps, on a machine without a GPU: wait while chat replies are written."""
    while chat_activity.replies_in_progress() and not _has_gpu():
        _beat(job, note=PAUSED)
        time.sleep(settings.JOB_HEARTBEAT_SECONDS)


def _has_gpu() -> bool:
    import torch  # noqa: PLC0415 - the job worker's lane already holds it for the training

    return torch.cuda.is_available()


def _run(job: EmbedderFineTune) -> None:
    knowledge_base = job.knowledge_base
    if job.retrieval_test is None:
        raise EmbedderJobError("Its retrieval test was deleted: the held-out questions are gone.")
    _beat(job, note="reading the base's passages and the training pairs…")
    passages = BasePassages(knowledge_base)
    if len(passages) < 2:
        raise EmbedderJobError("The knowledge base has fewer than 2 passages ready: upload documents first.")
    held_out = embedder_pairs.held_out_questions(job.retrieval_test, job.held_out)
    pairs = embedder_pairs.chosen_pairs(
        user=job.created_by, knowledge_base=knowledge_base, passages=passages, held_out=held_out
    )
    if job.generate:
        pairs.generated = _generated(job, passages, held_out)
    counts = pairs.counts()
    EmbedderFineTune.objects.filter(pk=job.pk).update(pairs=counts)
    if pairs.chosen < MIN_PAIRS and not job.generate:
        raise EmbedderJobError(f"The fine-tune {embedder_pairs.too_few_pairs(pairs.chosen)}.")
    if counts["total"] < MIN_PAIRS:
        raise EmbedderJobError(
            f"Only {counts['total']} training pairs ({counts['judged']} judged, {counts['tests']} from tests, "
            f"{counts['generated']} generated): at least {MIN_PAIRS} are needed."
        )

    start = _start_embedder(job.start_embedder)
    before = _held_out_figures(job, "the start embedder", start.embed, passages, held_out)
    EmbedderFineTune.objects.filter(pk=job.pk).update(recall_before=before["recall"], mrr_before=before["mrr"])
    del start

    folder = job_folder(job)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config = EmbedderTrainingConfig(**{**job.hyperparameters, "threads": settings.JOB_TORCH_THREADS})
    losses: list[dict] = []

    def progress(report: StepReport) -> bool:
        losses.append({"step": report.step, "loss": round(report.loss, 5)})
        _beat(
            job,
            done=report.step,
            total=report.total_steps,
            losses=losses[-2000:],
            note=f"training: epoch {report.epoch:.2f}, loss {report.loss:.4f}",
        )
        _yield_to_chat(job)
        return False  # a cancel raises Cancelled from _beat: nothing is saved

    _beat(job, done=0, total=0, note=f"training on {counts['total']} pairs…")
    try:
        train_embedder(
            pairs.all,
            start_folder=_start_folder(job.start_embedder),
            output_folder=folder / "model",
            config=config,
            progress=progress,
        )
    except EmbedderTrainingError as exc:
        raise EmbedderJobError(f"The training settings were refused: {exc}") from None

    from studio.llm.embeddings import Embedder  # noqa: PLC0415 - torch: job workers only

    tuned = Embedder(folder / "model")
    after = _held_out_figures(job, "the tuned embedder", tuned.embed, passages, held_out)
    del tuned
    _beat(job, note="registering the tuned embedder…")
    _register(job, folder / "model", before=before, after=after, counts=counts, config=config)
    job_end(job, JobStatus.FINISHED, recall_after=after["recall"], mrr_after=after["mrr"])


def _start_folder(start_embedder: str) -> Path:
    if start_embedder == EMBEDDING_MODEL:
        return bundled_embedder_folder()
    tuned_embedders.manifest(start_embedder)  # TunedEmbedderMissing when its files are gone
    return tuned_embedders.folder_of(tuned_embedders.tuned_id(start_embedder))


def _start_embedder(start_embedder: str):
    if start_embedder == EMBEDDING_MODEL:
        from studio.llm.embeddings import load_embedder  # noqa: PLC0415 - torch: job workers only

        return load_embedder()
    try:
        return tuned_embedders.load_tuned_embedder(start_embedder)
    except tuned_embedders.TunedEmbedderMissing as exc:
        raise EmbedderJobError(f"The embedder it starts from is gone: {exc.message}") from None


def _held_out_figures(
    job: EmbedderFineTune, which: str, embed: Callable, passages: BasePassages, held_out: HeldOut
) -> dict:
    """Held-out recall@5 and MRR@10 with `embed` (texts → (N, D) torch unit rows): the base's
    passages embedded in memory, each question's top RECALL_DEPTH by cosine."""
    rows = []
    texts = [passage.embedding_text for passage in passages.passages]
    for start in range(0, len(texts), EMBED_BATCH):
        _yield_to_chat(job)
        rows.append(embed(texts[start : start + EMBED_BATCH]).numpy())  # (B, D)
        _beat(
            job, note=f"measuring {which}: {min(start + EMBED_BATCH, len(texts)):,} of {len(texts):,} passages embedded"
        )
    ids = np.array([passage.chunk_id for passage in passages.passages], dtype=np.int64)
    matrix = VectorMatrix(ids, np.concatenate(rows).astype(np.float32))  # (N, D)
    by_id = passages.by_id
    questions = [question for question, _ in held_out.questions]
    if not questions or not len(ids):
        return {"recall": None, "mrr": None}
    vectors = np.concatenate(
        [embed(questions[start : start + EMBED_BATCH]).numpy() for start in range(0, len(questions), EMBED_BATCH)]
    )  # (Q, D)
    ranks = []
    for (_, right), vector in zip(held_out.questions, vectors):
        hits = [
            PassageHit(chunk_id, by_id[chunk_id].text, by_id[chunk_id].document, by_id[chunk_id].page)
            for chunk_id, _ in matrix.candidates(vector, limit=RECALL_DEPTH)
        ]
        ranks.append(first_right(right, hits)[0])
    count = len(ranks) or 1
    return {
        "recall": round(sum(1 for rank in ranks if rank is not None and rank <= RECALL_AT) / count, 4),
        "mrr": round(sum(1 / rank for rank in ranks if rank) / count, 4),
    }


def _generated(job: EmbedderFineTune, passages: BasePassages, held_out: HeldOut) -> list:
    """A question for each passage of a seeded sample, from the served model the job names, through
    the model workers (as evaluations and the optimiser ask): pairs of the usable ones."""
    model = job.generate["model"]
    seed = job.hyperparameters.get("seed", 0)
    sample = embedder_pairs.generation_sample(passages, job.generate["chunks"], seed=seed)
    excluded = held_out.texts
    _beat(job, done=0, total=len(sample), note=f"asking {model} for questions: 0 of {len(sample)}")
    pairs, done = [], 0
    for index, reply in answers_from_model_workers(
        job,
        [embedder_pairs.generation_request(passage) for passage in sample],
        embedder_pairs.generation_parameters(seed),
        owner=job.created_by,
        model_name=model,
        key=job_key(job.pk),
        title=f"Embedder fine-tune {job.pk}",
        count_retry=lambda: None,  # a reply lost with its worker is asked again: nothing to count
    ):
        done += 1
        if reply.status != Message.Status.FAILED:
            question = embedder_pairs.generated_question(reply.content, sample[index])
            if question and normalised(question) not in excluded:
                pairs.append(embedder_pairs.Pair(question, sample[index].embedding_text))
        if done % 5 == 0 or done == len(sample):
            _beat(job, done=done, note=f"asking {model} for questions: {done} of {len(sample)}")
    return list(dict.fromkeys(pairs))


def _register(
    job: EmbedderFineTune, output: Path, *, before: dict, after: dict, counts: dict, config: EmbedderTrainingConfig
) -> TunedEmbedder:
    """The tuned folder moved to STUDIO_EMBEDDERS_DIR/<id>/ with its manifest, and its registry row."""
    Path(settings.STUDIO_EMBEDDERS_DIR).mkdir(parents=True, exist_ok=True)
    dimension = json.loads((output / "config.json").read_text())["hidden_size"]
    with transaction.atomic():
        tuned = TunedEmbedder.objects.create(
            job=job,
            knowledge_base=job.knowledge_base,
            tuned_from=job.start_embedder,
            recall_before=before["recall"],
            recall_after=after["recall"],
            mrr_before=before["mrr"],
            mrr_after=after["mrr"],
            held_out_questions=len(job.held_out),
            pairs=counts,
            training_config={k: v for k, v in config.__dict__.items() if k != "threads"},
        )
        target = tuned_embedders.folder_of(tuned.pk)
        shutil.rmtree(target, ignore_errors=True)  # left by a registration that failed after its move
        shutil.move(str(output), str(target))
        tuned_embedders.write_manifest(
            target, knowledge_base_id=job.knowledge_base_id, tuned_from=job.start_embedder, dimension=dimension
        )
        tuned.folder = str(target)
        tuned.size_bytes = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        tuned.save(update_fields=["folder", "size_bytes"])
    return tuned

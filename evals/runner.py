"""Running an evaluation in a job worker: batched decoding, scoring, progress, cancel.

The job worker holds its own copy of the model (loaded on its first evaluation). Chat comes
first: before each batch the runner looks for chat replies being written anywhere and, while
there are some, waits (the page says "paused: chat replies come first"), at most
EVAL_CHAT_PAUSE_MAX_SECONDS at a time. A batch already decoding finishes (a few seconds).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time

from django.conf import settings

from chat.models import Message
from prompts import selectors as prompt_selectors
from prompts.rendering import MissingVariablesError, TemplateError, render_user_turn
from studio.jobs import JobStatus, job_claim, job_end, job_progress
from studio.llm import GenerationSettings, load_model
from studio.llm.adapters import ServedModels
from studio.llm.batch import generate_batch

from . import scorers
from .models import Evaluation, EvaluationResult, FailureCase
from .prompting import case_messages

log = logging.getLogger("evals")
JUDGE_MAX_NEW_TOKENS = 32


class Cancelled(Exception):
    pass


@functools.cache
def _served() -> ServedModels:
    """The base model (loaded once per job worker process) and its fine-tuned adapters."""
    loaded = load_model(settings.LLM_MODEL, cache_dir=settings.LLM_MODEL_CACHE_DIR, device=settings.LLM_DEVICE,
                        quantization=settings.LLM_QUANTIZATION, dtype=settings.LLM_DTYPE)
    return ServedModels(loaded, settings.STUDIO_ADAPTERS_DIR)


def model_for(name: str):
    """The model an evaluation names: the base, or the base with that adapter active."""
    served = _served()
    served.activate(name)
    return served.loaded


model_for.cache_clear = _served.cache_clear  # tests start from a fresh load


def decoding_settings(version) -> GenerationSettings:
    """The version's parameters; greedy unless the version sets a temperature (reproducible scores)."""
    max_new_tokens = version.max_new_tokens or settings.EVAL_MAX_NEW_TOKENS
    return GenerationSettings(max_new_tokens=max_new_tokens,
                              temperature=version.temperature if version.temperature is not None else 0.0,
                              top_p=version.top_p or 1.0, stop=tuple(version.stop), seed=0,
                              min_new_tokens=min(settings.LLM_MIN_NEW_TOKENS, max_new_tokens))


def run_evaluation(evaluation_id: int) -> None:
    evaluation = Evaluation.objects.select_related("prompt_version__prompt").filter(pk=evaluation_id).first()
    if evaluation is None or not job_claim(evaluation):
        return  # cancelled while queued, or delivered twice
    try:
        _run(evaluation)
    except Cancelled:
        job_end(evaluation, JobStatus.CANCELLED)
    except Exception as exc:
        log.exception("evaluation %s failed", evaluation_id)
        job_end(evaluation, JobStatus.FAILED, error=_describe(exc))
    else:
        job_end(evaluation, JobStatus.FINISHED)


def _describe(exc: Exception) -> str:
    text = str(exc) or exc.__class__.__name__
    if "out of memory" in text.lower() or isinstance(exc, MemoryError):
        return "The job worker ran out of memory. Lower EVAL_BATCH_SIZE or the reply length. " \
               "The results so far are kept."
    return text if text.endswith(".") else text + "."


def _run(evaluation: Evaluation) -> None:
    version = evaluation.prompt_version
    by_id = {case.pk: case for case in FailureCase.objects.filter(pk__in=evaluation.case_ids)}
    cases = [by_id[pk] for pk in evaluation.case_ids if pk in by_id]  # a deleted case drops out
    job_progress(evaluation, note="loading the model…", total=len(cases))
    loaded = model_for(evaluation.model_name)
    decoding = decoding_settings(version)
    judge = _judge_for(evaluation.scorers)
    similarity = _similarity if any(s["type"] == "semantic_similarity" for s in evaluation.scorers) else None

    conversations, runnable, done, passed = [], [], 0, 0
    for case in cases:
        try:
            conversations.append(case_messages(case, version))
            runnable.append(case)
        except (MissingVariablesError, TemplateError) as exc:
            EvaluationResult.objects.create(evaluation=evaluation, case=case, error=str(exc))
            done += 1
    job_progress(evaluation, done=done, note="")

    pending: list[tuple[FailureCase, str, int]] = []

    def store(batch):
        nonlocal done, passed
        judged = judge(loaded, batch) if judge else [None] * len(batch)
        for (case, output, tokens), judge_score in zip(batch, judged):
            scores, all_pass = {}, True
            for spec in evaluation.scorers:
                value = scorers.score(spec, output, case.expected, similarity=similarity, judge_score=judge_score)
                scores[spec["type"]] = value
                all_pass = all_pass and scorers.passes(spec, value)
            EvaluationResult.objects.create(evaluation=evaluation, case=case, output=output, scores=scores,
                                            scorer_passed=all_pass, passed=all_pass, completion_tokens=tokens)
            passed += all_pass
            done += 1
        if job_progress(evaluation, done=done, passed=passed, note=""):
            raise Cancelled

    def before_batch():
        if pending:
            store(pending[:])
            pending.clear()
        _wait_while_chat_answers(evaluation)

    for index, reply in generate_batch(loaded, conversations, decoding, batch_size=settings.EVAL_BATCH_SIZE,
                                       before_batch=before_batch):
        pending.append((runnable[index], reply.text, reply.completion_tokens))
    if pending:
        store(pending)


def _wait_while_chat_answers(evaluation: Evaluation) -> None:
    waited = 0.0
    while Message.objects.filter(status__in=Message.IN_PROGRESS).exists():
        if waited >= settings.EVAL_CHAT_PAUSE_MAX_SECONDS:
            return
        if job_progress(evaluation, note="paused: chat replies come first"):
            raise Cancelled
        time.sleep(0.5)
        waited += 0.5
    if job_progress(evaluation, note=""):
        raise Cancelled


def _similarity(first: str, second: str) -> float:
    from studio.llm.embeddings import load_embedder

    return load_embedder().similarity(first, second)


def _judge_for(scorer_specs: list[dict]):
    """A function (loaded model, batch) → judge scores, when an llm_judge scorer is asked for."""
    spec = next((s for s in scorer_specs if s["type"] == "llm_judge"), None)
    if spec is None:
        return None
    prompt = prompt_selectors.prompt_by_slug(spec["prompt"])
    if prompt is None:
        raise ValueError(f"The judging prompt “{spec['prompt']}” no longer exists.")
    judge_version = prompt_selectors.version_resolve(prompt, number=spec.get("version"))

    def judge(loaded, batch):
        conversations = []
        for case, output, _ in batch:
            values = {"input": case.input_display, "expected": case.expected, "actual": output, "output": output}
            values = {name: value if value.strip() else "(empty)" for name, value in values.items()}
            turn = render_user_turn(judge_version.template, values)
            system = [{"role": "system", "content": judge_version.instructions}] if judge_version.instructions else []
            conversations.append(system + [{"role": "user", "content": turn}])
        decoding = dataclasses.replace(decoding_settings(judge_version), max_new_tokens=JUDGE_MAX_NEW_TOKENS,
                                       min_new_tokens=0)
        replies = dict(generate_batch(loaded, conversations, decoding, batch_size=settings.EVAL_BATCH_SIZE))
        return [scorers.judge_verdict(replies[n].text) for n in range(len(batch))]

    return judge

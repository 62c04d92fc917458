"""Running an evaluation in a job worker: its cases answered by the model workers, scored,
with progress and cancel.

The cases go to the same model workers and batches as the chat, as replies of unlisted
conversations of kind `evaluation` (chat.services.reply_request_unlisted), at most
EVAL_BATCH_SIZE at a time. Workers take them after everything people wait for at the page and
through the API (chat.serving.queue.queued_in_serving_order), so an evaluation never holds a chat
back, and a model is loaded once per worker, not again per job worker. The job worker itself
holds no language model (only the embedding model of the semantic-similarity scorer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db.models import F

from chat import services as chat_services
from chat.models import Conversation, Message
from chat.serving import queue as chat_queue
from chat.serving.wakeups import wake_workers
from prompts import selectors as prompt_selectors
from prompts.rendering import MissingVariablesError, TemplateError, assembled_messages, render_user_turn
from studio.jobs import JobRecord, JobStatus, job_claim, job_end, job_progress
from studio.llm.replies import OUT_OF_MEMORY, failure_code

from . import scorers
from .models import Evaluation, EvaluationResult, FailureCase
from .prompting import case_examples, case_messages, case_retrieval, read_by_model

log = logging.getLogger("evals")
JUDGE_MAX_NEW_TOKENS = 32
POLL_S = 0.1  # how often the runner looks at the replies it waits for


class Cancelled(Exception):
    pass


class NoModelWorker(Exception):
    pass


def decoding_parameters(version) -> dict:
    """The version's parameters (within the ranges: PromptVersion.reply_sampling); greedy unless the
    version sets a temperature (reproducible scores)."""
    sampling = version.reply_sampling
    max_new_tokens = sampling.get("max_new_tokens") or settings.EVAL_MAX_NEW_TOKENS
    parameters = {
        "max_new_tokens": max_new_tokens,
        "temperature": sampling.get("temperature", 0.0),
        "top_p": sampling.get("top_p", 1.0),
        "stop": sampling.get("stop", []),
        "seed": 0,
        "min_new_tokens": min(settings.LLM_MIN_NEW_TOKENS, max_new_tokens),
    }
    if version.answer_format["type"] != "text":  # the version's format applies to its evaluation too
        parameters["output_format"] = version.answer_format
    if version.tool_use:
        # The replies are of unlisted conversations without the version: the worker reads the tools
        # from the parameters (chat.selectors.tools_for), as from an API request's.
        parameters["tools"] = version.tool_use
    return parameters


def answers_from_model_workers(
    job: JobRecord,
    conversations: list[list[dict]],
    parameters: dict,
    *,
    owner,
    model_name: str,
    key: str,
    title: str,
    count_retry: Callable[[], None],
) -> Iterator[tuple[int, Message]]:
    """(index, finished reply) for each of `conversations`, in the order they finish, asked as
    `owner` of `model_name` for `job` (its heartbeat and cancel flag; `key` names its unlisted
    conversations). At most EVAL_BATCH_SIZE wait at the workers at once; a reply lost with its model
    worker (killed, out of memory: the sweeper fails it as worker_lost) is asked again, up to
    EVAL_CASE_RETRIES times a conversation, each time calling `count_retry`. The unlisted
    conversations are removed at the end, and replies still waiting are withdrawn (cancel, failure).
    Evaluations and the optimiser's candidates both call it."""
    waiting: dict[int, int] = {}  # reply id → index in `conversations`
    created: list[int] = []
    to_ask = list(range(len(conversations)))[::-1]  # popped from the end: in order, retries first
    asked = [0] * len(conversations)
    last_check = 0.0
    try:
        while to_ask or waiting:
            added = False
            while to_ask and len(waiting) < settings.EVAL_BATCH_SIZE:
                index = to_ask.pop()
                reply = chat_services.reply_request_unlisted(
                    owner=owner,
                    kind=Conversation.Kind.EVALUATION,
                    messages=conversations[index],
                    model_name=model_name,
                    parameters=parameters,
                    title=title,
                    job=key,
                )
                waiting[reply.pk], added = index, True
                asked[index] += 1
                created.append(reply.conversation_id)
            if added:
                async_to_sync(wake_workers)()
            time.sleep(POLL_S)
            if time.monotonic() - last_check > settings.JOB_HEARTBEAT_SECONDS:  # a heartbeat, the cancel flag
                last_check = time.monotonic()
                if job_progress(job):
                    raise Cancelled
            for reply in Message.objects.filter(pk__in=list(waiting)).exclude(status__in=Message.IN_PROGRESS):
                if (
                    reply.status == Message.Status.FAILED and reply.error_code in Message.NO_ANSWER
                ):  # no worker could answer
                    raise NoModelWorker(reply.error)
                index = waiting.pop(reply.pk)
                if _lost_with_its_worker(reply) and asked[index] <= settings.EVAL_CASE_RETRIES:
                    # The model's failure, not the prompt's: asked again (another worker, or this one restarted).
                    to_ask.append(index)
                    count_retry()
                    continue
                yield index, reply
    finally:
        if waiting:
            _withdraw(list(waiting))
        Conversation.objects.filter(pk__in=created).delete()


def _lost_with_its_worker(reply: Message) -> bool:
    return reply.status == Message.Status.FAILED and reply.error_code == Message.ErrorCode.WORKER_LOST


def job_key(evaluation_id: int) -> str:
    return f"evaluation:{evaluation_id}"


def _withdraw(reply_ids: list[int]) -> None:
    _tell_workers_to_stop(chat_queue.replies_withdraw(message_ids=reply_ids))


def evaluation_withdraw_cases(evaluation_id: int) -> None:
    """An evaluation that ended without its job worker (killed): its cases still waiting at the
    model workers are withdrawn and its unlisted conversations removed."""
    job_withdraw_cases(job_key(evaluation_id))


def job_withdraw_cases(key: str) -> None:
    """The same for any job that asked through answers_from_model_workers under `key`."""
    _tell_workers_to_stop(chat_services.conversations_withdraw(job=key))


def _tell_workers_to_stop(replies: list[Message]) -> None:
    layer = get_channel_layer()
    for reply in replies:
        try:
            async_to_sync(layer.send)(reply.worker_channel, {"type": "chat.stop", "message_id": reply.pk})
        except Exception:  # the channel layer is away: the worker's next lease renewal finds the row gone
            log.warning("could not tell %s to stop reply %s", reply.worker_channel, reply.pk)


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
    if failure_code(exc) == OUT_OF_MEMORY:
        return "Out of memory. Lower EVAL_BATCH_SIZE or the reply length. The results so far are kept."
    return text if text.endswith(".") else text + "."


def _answers(evaluation: Evaluation, conversations: list[list[dict]], parameters: dict):
    def count_retry():
        Evaluation.objects.filter(pk=evaluation.pk).update(retried=F("retried") + 1)

    return answers_from_model_workers(
        evaluation,
        conversations,
        parameters,
        owner=evaluation.created_by,
        model_name=evaluation.model_name,
        key=job_key(evaluation.pk),
        title=f"Evaluation {evaluation.pk}",
        count_retry=count_retry,
    )


def _run(evaluation: Evaluation) -> None:
    version = evaluation.prompt_version
    by_id = {case.pk: case for case in FailureCase.objects.filter(pk__in=evaluation.case_ids)}
    cases = [by_id[pk] for pk in evaluation.case_ids if pk in by_id]  # a deleted case drops out
    job_progress(evaluation, note="waiting for a model worker…", total=len(cases))
    judge = _judge_for(evaluation)
    similarity = similarity_for(evaluation.scorers)

    conversations, runnable, done, passed, errored = [], [], 0, 0, 0
    retrieved = {}  # case id → the passages its retrieval found, best first
    example_cases = {}  # case id → the cases chosen as its examples
    for case in cases:
        record = case_retrieval(case, version, user=evaluation.created_by)  # as the person who runs it
        retrieved[case.pk] = record["sources"] if record is not None else []
        try:
            examples, example_cases[case.pk] = case_examples(case, version, user=evaluation.created_by)
            conversations.append(
                case_messages(case, version, retrieval=read_by_model(record, version), examples=examples)
            )
            runnable.append(case)
        except (MissingVariablesError, TemplateError) as exc:
            EvaluationResult.objects.create(
                evaluation=evaluation, case=case, error=str(exc), retrieved=retrieved[case.pk]
            )
            done += 1
    job_progress(evaluation, done=done, note="")

    def store(batch: list[tuple[FailureCase, Message]]):
        nonlocal done, passed, errored
        answered = [(case, reply) for case, reply in batch if reply.status != Message.Status.FAILED]
        judged = dict(zip((case.pk for case, _ in answered), judge(answered))) if judge else {}
        for case, reply in batch:
            if reply.status == Message.Status.FAILED:  # no answer to score: an error, not a fail
                EvaluationResult.objects.create(
                    evaluation=evaluation,
                    case=case,
                    output=reply.content,
                    error=reply.error,
                    error_code=reply.error_code or Message.ErrorCode.MODEL_FAILED,
                    completion_tokens=reply.completion_tokens,
                    retrieved=retrieved[case.pk],
                    example_cases=example_cases[case.pk],
                )
                done += 1
                errored += 1
                continue
            reasons = {}
            scores, all_pass, failures = reply_scores(
                evaluation.scorers,
                version,
                reply.content,
                case.expected,
                similarity=similarity,
                judge_score=judged.get(case.pk),
                reasons=reasons,
            )
            EvaluationResult.objects.create(
                evaluation=evaluation,
                case=case,
                output=reply.content,
                scores=scores,
                reasons=reasons,
                scorer_passed=all_pass,
                passed=all_pass,
                error="; ".join(failures),
                completion_tokens=reply.completion_tokens,
                retrieved=retrieved[case.pk],
                example_cases=example_cases[case.pk],
            )
            passed += all_pass
            done += 1
        if job_progress(evaluation, done=done, passed=passed, errored=errored, note=""):
            raise Cancelled

    # Each case is scored and counted as soon as its reply ends; a judge reads them in batches.
    batch_size = settings.EVAL_BATCH_SIZE if judge else 1
    finished = []
    for index, reply in _answers(evaluation, conversations, decoding_parameters(version)):
        finished.append((runnable[index], reply))
        if len(finished) >= batch_size:
            store(finished)
            finished = []
        elif judge:
            job_progress(evaluation, note=f"{done + len(finished)} answered, waiting to be judged")
    if finished:
        store(finished)


def reply_scores(
    specs: list[dict], version, output: str, expected: str, *, similarity=None, judge_score=None, reasons=None
) -> tuple[dict, bool, list[str]]:
    """A reply scored by every scorer: (scorer type → value, passed them all, the scorers' errors).
    A json_schema scorer without a schema uses `version`'s own. A scorer that does not apply to the
    case (scorers.NotApplicable) is left out of its scores and verdict; none applying is an error.
    `reasons`, when given, is filled with scorer type → why it scored so (tool_call's, not applicable)."""
    scores, all_pass, failures = {}, True, []
    reasons = {} if reasons is None else reasons
    for spec in specs:
        if spec["type"] == "json_schema" and not spec.get("schema"):  # the evaluated version's own
            spec = {**spec, "schema": version.answer_format.get("schema")}
        try:
            if spec["type"] == "tool_call":
                value, reason = scorers.tool_call_score(spec, output, expected)
                if reason:
                    reasons[spec["type"]] = reason
            else:
                value = scorers.score(spec, output, expected, similarity=similarity, judge_score=judge_score)
        except scorers.NotApplicable as exc:
            reasons[spec["type"]] = str(exc)
            continue
        except scorers.ScoringFailed as exc:  # shown as the scorer's error, never a silent 0
            scores[spec["type"]], all_pass = None, False
            failures.append(str(exc))
            continue
        scores[spec["type"]] = value
        all_pass = all_pass and scorers.passes(spec, value)
    if specs and not scores and not failures:
        all_pass = False
        failures.append("no scorer applies to this case (" + "; ".join(reasons.values()) + ")")
    return scores, all_pass, failures


def similarity_for(specs: list[dict]):
    """The similarity function semantic_similarity needs (None when no scorer asks for it)."""
    return _similarity if any(s["type"] == "semantic_similarity" for s in specs) else None


def _similarity(first: str, second: str) -> float:
    # torch (the embedder's) loads only where an evaluation scores by similarity
    from studio.llm.embeddings import load_embedder  # noqa: PLC0415

    return load_embedder().similarity(first, second)


def _judge_for(evaluation: Evaluation):
    """A function [(case, reply)] → judge scores, when an llm_judge scorer is asked for: the judging
    prompt's verdicts, written by the same model workers."""
    spec = next((s for s in evaluation.scorers if s["type"] == "llm_judge"), None)
    if spec is None:
        return None
    prompt = prompt_selectors.prompt_by_slug(spec["prompt"])
    if prompt is None:
        raise ValueError(f"The judging prompt “{spec['prompt']}” no longer exists.")
    judge_version = prompt_selectors.version_resolve(prompt, number=spec.get("version"))
    parameters = {**decoding_parameters(judge_version), "max_new_tokens": JUDGE_MAX_NEW_TOKENS, "min_new_tokens": 0}
    parameters.pop("tools", None)  # a verdict is text: the judging prompt's tools are not offered

    def judge(batch):
        conversations = []
        for case, reply in batch:
            values = {
                "input": case.input_display,
                "expected": case.expected,
                "actual": reply.content,
                "output": reply.content,
            }
            values = {name: value if value.strip() else "(empty)" for name, value in values.items()}
            conversations.append(
                assembled_messages(
                    system=judge_version.instructions,
                    turns=[{"role": "user", "content": render_user_turn(judge_version.template, values)}],
                )
            )
        verdicts = dict(_answers(evaluation, conversations, parameters))
        return [scorers.judge_verdict(verdicts[n].content) for n in range(len(batch))]

    return judge

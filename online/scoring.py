"""Scoring a sampled reply, in a job worker of the evaluations lane: each of its rule's scorers
leaves a score or an error with its reason; the judges are asked of the model workers' background
lane (evals.runner.answers_from_model_workers: after every reply people wait for, so scoring never
slows them). Then monitoring is told the values and `reply_scored` is sent (the review queue)."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from chat.models import Message
from chat.serving.registry import available_models, served_model_choice
from evals.runner import Cancelled, NoModelWorker, answers_from_model_workers
from monitoring import services as monitoring_services
from studio.jobs import JobStatus, job_claim, job_end, job_progress

from . import scorers
from .models import OnlineSample, OnlineScore, OnlineScoreDay, judge_key
from .signals import reply_scored

log = logging.getLogger("online")

JUDGE_PARAMETERS = {
    "max_new_tokens": scorers.JUDGE_MAX_NEW_TOKENS,
    "min_new_tokens": 0,
    "temperature": 0.0,  # greedy: the same reply is judged the same way
    "top_p": 1.0,
    "stop": [],
    "seed": 0,
    # The judge writes a whole number 1-5 and nothing else, enforced while it decodes (llguidance; an
    # external engine gets it as a JSON Schema response_format).
    "output_format": {"type": "json_schema", "schema": scorers.JUDGE_SCHEMA},
}

Outcome = tuple[float | None, str]  # (value, why there is none)


def score_sample(sample_id: int) -> None:
    sample = OnlineSample.objects.select_related("rule__prompt", "message__parent").filter(pk=sample_id).first()
    if sample is None or not job_claim(sample):
        return  # its rule was deleted, or it was delivered twice
    try:
        outcomes = _scored(sample)
        _store(sample, outcomes)
    except IntegrityError:  # its rule (or the reply) was deleted while it was scored: nothing to keep
        log.info("online sample %s: its rule or reply was deleted while it was scored", sample_id)
        return
    except Exception as exc:
        log.exception("online sample %s failed", sample_id)
        job_end(sample, JobStatus.FAILED, error=str(exc) or exc.__class__.__name__)
        return
    job_end(sample, JobStatus.FINISHED, done=len(outcomes))
    _tell(sample, outcomes)


def _store(sample: OnlineSample, outcomes: dict[str, Outcome]) -> None:
    """The scores and the day's figures, together: a sample scored again (its job worker died after
    storing them) changes neither."""
    day = timezone.localdate()
    with transaction.atomic():
        if OnlineScore.objects.filter(rule_id=sample.rule_id, message_id=sample.message_id).exists():
            return
        OnlineScore.objects.bulk_create(
            [
                OnlineScore(
                    rule_id=sample.rule_id,
                    message_id=sample.message_id,
                    scorer=name,
                    value=value,
                    status=OnlineScore.Status.SCORED if value is not None else OnlineScore.Status.ERROR,
                    reason=reason[:2000],
                )
                for name, (value, reason) in outcomes.items()
            ]
        )
        for name, (value, _) in outcomes.items():
            _add_to_day(sample.rule_id, name, day, value)


def _add_to_day(rule_id: int, scorer: str, day, value: float | None) -> None:
    counts = (
        {"total": F("total") + value, "scored": F("scored") + 1} if value is not None else {"errors": F("errors") + 1}
    )
    day_row = OnlineScoreDay.objects.filter(rule_id=rule_id, scorer=scorer, day=day)
    if day_row.update(**counts):
        return
    try:
        with transaction.atomic():  # the day's first score; another job worker may make the row first
            OnlineScoreDay.objects.create(
                rule_id=rule_id,
                scorer=scorer,
                day=day,
                total=value or 0.0,
                scored=int(value is not None),
                errors=int(value is None),
            )
    except IntegrityError:
        day_row.update(**counts)


def _scored(sample: OnlineSample) -> dict[str, Outcome]:
    """{scorer name: (value, reason)}, in the rule's order."""
    rule, output = sample.rule, sample.message.content
    job_progress(sample, total=len(rule.scorers))
    outcomes: dict[str, Outcome] = {}
    for spec in rule.scorers:
        if spec["type"] == "llm_judge":
            continue
        try:
            outcomes[spec["name"]] = (scorers.score(spec, output), "")
        except scorers.ScoringFailed as exc:
            outcomes[spec["name"]] = (None, str(exc))
    judges = [spec for spec in rule.scorers if spec["type"] == "llm_judge"]
    if judges:
        outcomes.update(_judged(sample, judges))
    return {spec["name"]: outcomes[spec["name"]] for spec in rule.scorers}


def _judged(sample: OnlineSample, specs: list[dict]) -> dict[str, Outcome]:
    """Each judge's verdict on the reply, asked of its model; a model that is not served, fails or
    does not answer with a score is an error saying so, never a 0."""
    reply = sample.message
    question = reply.parent.content if reply.parent is not None else ""
    outcomes: dict[str, Outcome] = {}
    by_model: dict[str, list[dict]] = {}
    for spec in specs:
        served = served_model_choice(spec["model"])
        if served is None:
            outcomes[spec["name"]] = (
                None,
                f"the judge model “{spec['model']}” is not served (served: {', '.join(available_models())})",
            )
        else:
            by_model.setdefault(served, []).append(spec)
    for model_name, model_specs in by_model.items():
        try:
            for index, judged in answers_from_model_workers(
                sample,
                [scorers.judge_messages(spec, question, reply.content) for spec in model_specs],
                JUDGE_PARAMETERS,
                owner=sample.rule.created_by or sample.rule.prompt.owner,
                model_name=model_name,
                key=judge_key(sample.pk),
                title=f"Online evaluation {sample.rule_id}",
                count_retry=lambda: None,
            ):
                outcomes[model_specs[index]["name"]] = _verdict(judged)
        except (NoModelWorker, Cancelled) as exc:
            for spec in model_specs:
                outcomes.setdefault(spec["name"], (None, f"no model worker answered the judge: {exc}"))
    return outcomes


def _verdict(judged: Message) -> Outcome:
    if judged.status == Message.Status.FAILED:
        return None, f"the judge model failed ({judged.error_code or 'model_failed'}): {judged.error}".strip()
    try:
        return scorers.judge_score(judged.content), ""
    except scorers.ScoringFailed as exc:
        return None, str(exc)


def _tell(sample: OnlineSample, outcomes: dict[str, Outcome]) -> None:
    """Monitoring keeps the values in its rollups (an error counted apart, never as 0); the review
    queue hears of replies below the rule's threshold. Their failures are logged: the scores are
    stored whatever they do."""
    rule = sample.rule
    values = {name: value for name, (value, _) in outcomes.items()}
    for name, value in values.items():
        try:
            monitoring_services.record_online_score(message_id=sample.message_id, scorer=name, value=value)
        except Exception:
            log.exception("monitoring could not count the online score %s of reply %s", name, sample.message_id)
    below = rule.review_below is not None and any(v is not None and v < rule.review_below for v in values.values())
    for receiver, response in reply_scored.send_robust(
        sender=OnlineSample, message_id=sample.message_id, rule_id=rule.pk, scores=values, below_threshold=below
    ):
        if isinstance(response, Exception):
            log.error("reply_scored receiver %s failed: %r", receiver, response)

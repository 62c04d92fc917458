"""Which finished replies a rule samples, and handing them to the job workers.

The receiver of chat's `reply_finished` runs where the reply was stored: in the model worker,
before it tells the tabs the reply is done. So it only reads (the reply, the prompt's active
rules), draws, stores the samples and leaves: the broker is told from a thread of its own (a broker
that is away would otherwise hold the done frame for its retries), and the scoring itself is a job
of the evaluations lane (online.scoring), never this process's.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from django.db import close_old_connections

from chat.models import Conversation, Message
from evals.runner import job_withdraw_cases
from monitoring.reply_figures import served_label
from monitoring.services import asked_label
from prompts.models import PromptVersion
from studio import jobs
from studio.jobs import JobStatus

from .models import OnlineRule, OnlineSample, judge_key

log = logging.getLogger("online")

# Production traffic: an API request of `prompt:<slug>`, a chat started from a version, the
# playground. Evaluations' cases (and the judges' own replies) and retrieval rewrites are not.
FOLLOWED_KINDS = (Conversation.Kind.API, Conversation.Kind.CHAT, Conversation.Kind.PLAYGROUND)
_sender: tuple[int, ThreadPoolExecutor] | None = None  # (the process it was made in, the thread)


def sampled(rule_id: int, message_id: int, rate: float) -> bool:
    """A draw fixed by (rule, reply): the same reply finished twice is drawn the same way. Uniform
    in [0, 1) from a hash, so 0 samples nothing and 1 everything."""
    digest = hashlib.sha256(f"online:{rule_id}:{message_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def reply_label(*, kind: str, requested_model: str, variant: str, version) -> str:
    """The label a reply was served under, as monitoring counts it (monitoring.reply_figures.served_label:
    the A/B variant, else the label the request named, else the one `prompt:<slug>` resolved to);
    "" for chats and playground runs, which name a version."""
    api = kind == Conversation.Kind.API
    version_labels, newest = [], False
    if api and not variant:
        version_labels = list(version.labels.values_list("name", flat=True))
        newest = not version.prompt.versions.filter(number__gt=version.number).exists()
    return served_label(
        variant=variant,
        asked_label=asked_label(requested_model, version_labels),
        api=api,
        version_labels=version_labels,
        newest=newest,
    )


def samples_queue(*, message_id: int) -> list[int]:
    """Draw the complete reply `message_id` for each active rule of its prompt that follows it;
    store the samples drawn (one per rule and reply) and send them to the job workers. Returns the
    ids of the samples sent."""
    reply = (
        Message.objects.filter(
            pk=message_id,
            role=Message.Role.ASSISTANT,
            status=Message.Status.COMPLETE,
            conversation__kind__in=FOLLOWED_KINDS,
            conversation__prompt_version__isnull=False,
        )
        .values(
            "requested_model",
            "variant",
            "conversation__kind",
            "conversation__prompt_version_id",
            "conversation__prompt_version__prompt_id",
        )
        .first()
    )
    if reply is None:
        return []
    prompt_id, version_id = reply["conversation__prompt_version__prompt_id"], reply["conversation__prompt_version_id"]
    rules = list(
        OnlineRule.objects.filter(prompt_id=prompt_id, active=True).values_list(
            "pk", "label", "version_id", "sample_rate"
        )
    )
    if not rules:
        return []
    label = None
    if any(rule_label for _, rule_label, _, _ in rules):
        label = reply_label(
            kind=reply["conversation__kind"],
            requested_model=reply["requested_model"],
            variant=reply["variant"],
            version=PromptVersion.objects.select_related("prompt").get(pk=version_id),
        )
    chosen = [
        rule_id
        for rule_id, rule_label, rule_version, rate in rules
        if (rule_version == version_id if rule_version else rule_label == label) and sampled(rule_id, message_id, rate)
    ]
    if not chosen:
        return []
    OnlineSample.objects.bulk_create(
        [OnlineSample(rule_id=rule_id, message_id=message_id) for rule_id in chosen],
        ignore_conflicts=True,  # this reply was drawn before (a signal sent again)
    )
    sample_ids = list(
        OnlineSample.objects.filter(
            message_id=message_id, rule_id__in=chosen, status=JobStatus.QUEUED, dispatched_at=None
        ).values_list("pk", flat=True)
    )
    if sample_ids:
        _sending_thread().submit(_send, sample_ids)
    return sample_ids


def _sending_thread() -> ThreadPoolExecutor:
    """One thread a process (a forked child makes its own: the parent's thread is not in it)."""
    global _sender
    if _sender is None or _sender[0] != os.getpid():
        _sender = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="online-samples"))
    return _sender[1]


def _send(sample_ids: list[int]) -> None:
    """In the sending thread: each sample to the job queue, by its task's name (studio.jobs.dispatch:
    one the broker refuses stays unsent, and the sweeper sends it again)."""
    try:
        for sample_id in sample_ids:
            jobs.dispatch(OnlineSample, sample_id)
    except Exception:  # the database is away: the sweeper sends them once it is back
        log.warning("could not queue online samples %s", sample_ids, exc_info=True)
    finally:
        close_old_connections()


def on_reply_finished(sender, message_id: int, **kwargs) -> None:
    """chat.signals.reply_finished: never raises into chat (its reply is stored whatever happens here)."""
    try:
        samples_queue(message_id=message_id)
    except Exception:
        log.exception("could not sample reply %s for online evaluation", message_id)


def samples_sweep() -> None:
    """The sweeper's part (studio.sweeping): samples the broker refused are sent again, those whose
    job worker died are failed; a judge's replies still waiting at the model workers are withdrawn."""
    for sample_id in jobs.jobs_sweep(OnlineSample):
        job_withdraw_cases(judge_key(sample_id))

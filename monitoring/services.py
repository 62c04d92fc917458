"""Rollups kept as replies happen. chat's signals (reply_finished, feedback_changed, reply_flagged)
call `reply_rollup_sync`; online evaluation calls `record_online_score`.

Every change is an atomic increment: a rollup row is added to with INSERT ... ON CONFLICT DO UPDATE
SET n = n + excluded.n (SQLite 3.24+ and PostgreSQL alike), so concurrent writers (model workers,
the web process, job workers) never lose a count. A reply's own CountedReply row is locked while
its figures change, so two events of the same reply apply their differences one after the other.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime

from django.db import IntegrityError, connection, transaction

from chat.models import Conversation, Message
from chat.selectors import output_format_for
from chat.serving.openai_api import PROMPT_MODEL

from .models import CountedReply, ReplyRollup, RollupTally
from .reply_figures import (
    SCORE_COUNT,
    SCORE_ERROR_COUNT,
    SCORE_PREFIXES,
    SCORE_TOTAL,
    ReplyFacts,
    figures_change,
    reply_figures,
    served_label,
)

log = logging.getLogger("monitoring")

# Production traffic: API requests (`prompt:<slug>`), chats from a version, playground runs.
# Evaluation replies and retrieval rewrites are the studio's own work, never counted.
PRODUCTION_KINDS = (Conversation.Kind.API, Conversation.Kind.CHAT, Conversation.Kind.PLAYGROUND)
ROLLUP_KEY = ("prompt_id", "version", "label", "variant", "model_name", "hour")
TALLY_KEY = ("rollup_id", "kind", "name")
MAX_SCORER_CHARS = 100  # RollupTally.name
WRITE_ATTEMPTS = 3  # a reply counted by two writers at once: the loser finds it counted and adds the difference


class RollupError(ValueError):
    """A figure that cannot be recorded (says what to send instead)."""


def reply_rollup_sync(*, message_id: int) -> bool:
    """Make the reply's rollup hold what the reply now is: counted once when it ends, then moved by
    the difference when its thumbs, its flag or its text (Continue) change. Nothing for a reply in
    progress, or one that is not production traffic of a prompt. True when the reply is counted."""
    for attempt in range(WRITE_ATTEMPTS):
        try:
            with transaction.atomic():
                return _sync(message_id)
        except IntegrityError:  # another writer counted it first (its CountedReply row): add the difference
            if attempt == WRITE_ATTEMPTS - 1:
                raise
    return False


def _sync(message_id: int) -> bool:
    message = (
        Message.objects.select_related("conversation__prompt_version")
        .filter(pk=message_id, role=Message.Role.ASSISTANT)
        .first()
    )
    if message is None or message.in_progress:
        return False
    conversation = message.conversation
    version = conversation.prompt_version
    if version is None or conversation.kind not in PRODUCTION_KINDS:
        return False
    figures = reply_figures(reply_facts(message))
    # Locked: two events of this reply (a thumbs and a flag at once) apply their changes in turn.
    counted = CountedReply.objects.select_for_update().filter(message_id=message_id).first()
    if counted is None:
        rollup_id = rollup_add(key=rollup_key(message), amounts=figures)
        CountedReply.objects.create(message_id=message_id, rollup_id=rollup_id, figures=figures)
        return True
    # Online scores are not the message's: they stay as recorded.
    figures.update({name: amount for name, amount in counted.figures.items() if name.startswith(SCORE_PREFIXES)})
    _apply(counted, figures)
    return True


def record_online_score(*, message_id: int, scorer: str, value: float | None) -> bool:
    """Count an online score of a reply in its rollup (for online evaluation): `value` a number, or
    None when the scorer could not score it (counted apart as an error, never as 0). A reply has one
    score per scorer name: recording it again replaces the earlier one. False when the reply is not
    counted (in progress, or not a prompt's production traffic)."""
    if not isinstance(scorer, str) or not 0 < len(scorer) <= MAX_SCORER_CHARS:
        raise RollupError(f"A scorer is named by text of 1 to {MAX_SCORER_CHARS} characters.")
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    ):
        raise RollupError("A score is a finite number, or None when the scorer could not score the reply.")
    if not reply_rollup_sync(message_id=message_id):  # counts it first if its end was missed
        return False
    with transaction.atomic():
        counted = CountedReply.objects.select_for_update().get(message_id=message_id)
        figures = {
            name: amount
            for name, amount in counted.figures.items()
            if name not in (SCORE_COUNT + scorer, SCORE_TOTAL + scorer, SCORE_ERROR_COUNT + scorer)
        }
        if value is None:
            figures[SCORE_ERROR_COUNT + scorer] = 1
        else:
            figures[SCORE_COUNT + scorer] = 1
            figures[SCORE_TOTAL + scorer] = float(value)
        _apply(counted, figures)
    return True


def _apply(counted: CountedReply, figures: dict[str, float]) -> None:
    change = figures_change(counted.figures, figures)
    if change:
        rollup_add(rollup_id=counted.rollup_id, amounts=change)
        counted.figures = figures
        counted.save(update_fields=["figures"])


# --- what a reply is ---------------------------------------------------------------------------------


def reply_facts(message: Message) -> ReplyFacts:
    return ReplyFacts(
        status=message.status,
        error_code=message.error_code,
        finish_reason=message.finish_reason,
        created_at=message.created_at,
        finished_at=message.finished_at,
        ttft_ms=message.ttft_ms,
        prompt_tokens=message.prompt_tokens,
        completion_tokens=message.completion_tokens,
        tokens_per_s=message.tokens_per_s,
        feedback=message.feedback,
        flagged=message.flagged_at is not None,
        has_output_format=output_format_for(message=message) is not None,
        retrieval=message.retrieval or {},
    )


def rollup_key(message: Message) -> dict:
    """The rollup a reply is counted in (its conversation's prompt version is set)."""
    conversation = message.conversation
    version = conversation.prompt_version
    api = conversation.kind == Conversation.Kind.API
    version_labels, newest = [], False
    if api and not message.variant:
        version_labels = list(version.labels.values_list("name", flat=True))
        newest = not version.prompt.versions.filter(number__gt=version.number).exists()
    return {
        "prompt_id": version.prompt_id,
        "version": version.number,
        "label": served_label(
            variant=message.variant,
            asked_label=asked_label(message.requested_model, version_labels),
            api=api,
            version_labels=version_labels,
            newest=newest,
        ),
        "variant": message.variant,
        "model_name": message.model_name or conversation.model_name,
        "hour": hour_of(message.created_at),
    }


def rollup_day(key: dict) -> dict:
    """The insert-only columns of a new rollup row: its UTC day."""
    return {"day": ReplyRollup.day_of(key["hour"])}


def asked_label(requested_model: str, version_labels: list[str]) -> str | None:
    """The label a request's model named (`prompt:<slug>@staging`), "" for a version number, what
    `prompt:<slug>` resolves to for none; None when the model asked is not `prompt:...`."""
    matched = PROMPT_MODEL.match(requested_model or "")
    if matched is None:
        return None
    if matched["label"]:
        return matched["label"]
    if matched["number"]:
        return ""
    return "production" if "production" in version_labels else "latest"


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# --- atomic increments ---------------------------------------------------------------------------


def rollup_add(*, amounts: dict[str, float], key: dict | None = None, rollup_id: int | None = None) -> int:
    """Add `amounts` (rollup columns and `kind.field:name` tallies) to the rollup `key` names
    (created when missing) or to `rollup_id`; its id."""
    columns, tallies = split_amounts(amounts)
    if rollup_id is None:
        rollup_id = upsert_add(ReplyRollup, ROLLUP_KEY, key, columns, rollup_day(key))
    elif columns:
        _add(ReplyRollup, rollup_id, columns)
    for (kind, name), tally_amounts in tallies.items():
        upsert_add(RollupTally, TALLY_KEY, {"rollup_id": rollup_id, "kind": kind, "name": name}, tally_amounts)
    return rollup_id


def split_amounts(amounts: dict[str, float]) -> tuple[dict[str, float], dict[tuple[str, str], dict[str, float]]]:
    """(the rollup's columns, {(tally kind, name): {"count"/"total": amount}}), tallies in key order."""
    columns, tallies = {}, {}
    for name, amount in amounts.items():
        if ":" in name:
            where, tally_name = name.split(":", 1)
            kind, field = where.split(".")
            tallies.setdefault((kind, tally_name), {})[field] = amount
        else:
            columns[name] = amount
    return columns, dict(sorted(tallies.items()))


def _add(model, pk: int, amounts: dict[str, float]) -> None:
    table, quote = model._meta.db_table, connection.ops.quote_name
    _require_columns(model, amounts)
    assignments = ", ".join(f"{quote(column)} = {quote(column)} + %s" for column in amounts)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {quote(table)} SET {assignments} WHERE id = %s", [*amounts.values(), pk])


def upsert_add(
    model, key_columns: tuple[str, ...], key: dict, amounts: dict[str, float], inserted: dict | None = None
) -> int:
    """INSERT the row with `amounts` (and the `inserted` columns), or add them to the row with the
    same key: one statement, atomic under concurrent writers on SQLite and PostgreSQL. The row's
    id. `model` may be a migration's historical model (the backfill)."""
    table, quote = model._meta.db_table, connection.ops.quote_name
    inserted = inserted or {}
    columns = [*key_columns, *inserted, *amounts]
    _require_columns(model, columns)
    fields = {field.column: field for field in model._meta.concrete_fields}
    values = [
        fields[column].get_db_prep_value(value, connection)
        for column, value in [*((column, key[column]) for column in key_columns), *inserted.items()]
    ] + list(amounts.values())
    # An empty change still returns the row's id (a no-op assignment).
    assignments = (
        ", ".join(f"{quote(column)} = {quote(table)}.{quote(column)} + excluded.{quote(column)}" for column in amounts)
        or f"{quote(key_columns[0])} = excluded.{quote(key_columns[0])}"
    )
    sql = (
        f"INSERT INTO {quote(table)} ({', '.join(quote(column) for column in columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))}) "
        f"ON CONFLICT ({', '.join(quote(column) for column in key_columns)}) DO UPDATE SET {assignments} "
        "RETURNING id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        return cursor.fetchone()[0]


def _require_columns(model, columns) -> None:
    """Column names go into the SQL: only the model's own."""
    known = {field.column for field in model._meta.concrete_fields}
    unknown = [column for column in columns if column not in known]
    if unknown:
        raise RollupError(f"{model._meta.db_table} has no columns {unknown}.")

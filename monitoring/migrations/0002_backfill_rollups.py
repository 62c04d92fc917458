"""Count the replies stored before monitoring existed (a studio upgraded in place), in batches of
BATCH replies by id: each batch's figures are summed per rollup in memory, added with one upsert per
rollup, and its CountedReply rows are written (a reply counted already is skipped), so that a later event of an old reply (a thumbs
changed) moves the sums as for a new one. Replies still being written are left to their end."""

from collections import Counter, defaultdict

from django.db import migrations

BATCH = 2000
PRODUCTION_KINDS = ("api", "chat", "playground")


def backfill(apps, schema_editor):
    from monitoring.reply_figures import ReplyFacts, reply_figures, served_label
    from monitoring.services import ROLLUP_KEY, TALLY_KEY, asked_label, hour_of, rollup_day, split_amounts, upsert_add

    Message = apps.get_model("chat", "Message")
    PromptLabel = apps.get_model("prompts", "PromptLabel")
    PromptVersion = apps.get_model("prompts", "PromptVersion")
    ReplyRollup = apps.get_model("monitoring", "ReplyRollup")
    RollupTally = apps.get_model("monitoring", "RollupTally")
    CountedReply = apps.get_model("monitoring", "CountedReply")

    replies = Message.objects.filter(
        role="assistant",
        conversation__prompt_version__isnull=False,
        conversation__kind__in=PRODUCTION_KINDS,
        status__in=("complete", "stopped", "failed"),
    ).order_by("pk")
    # Counted already (by a run of this migration stopped half-way, or live since): left as they are.
    replies = replies.exclude(pk__in=CountedReply.objects.values("message_id"))
    fields = (
        "pk", "status", "error_code", "finish_reason", "created_at", "finished_at", "ttft_ms", "prompt_tokens",
        "completion_tokens", "tokens_per_s", "feedback", "flagged_at", "retrieval", "model_name",
        "requested_model", "variant", "conversation__kind", "conversation__model_name", "conversation__parameters",
        "conversation__prompt_version_id",
    )  # fmt: skip
    after = 0
    while True:
        batch = list(replies.filter(pk__gt=after).values(*fields)[:BATCH])
        if not batch:
            return
        after = batch[-1]["pk"]
        version_ids = {reply["conversation__prompt_version_id"] for reply in batch}
        versions = {
            version.pk: version
            for version in PromptVersion.objects.filter(pk__in=version_ids).only("prompt_id", "number", "output_format")
        }
        labels = defaultdict(list)
        for version_id, name in PromptLabel.objects.filter(version_id__in=version_ids).values_list(
            "version_id", "name"
        ):
            labels[version_id].append(name)
        newest = {}
        for version in versions.values():
            if version.prompt_id not in newest:
                newest[version.prompt_id] = max(
                    PromptVersion.objects.filter(prompt_id=version.prompt_id).values_list("number", flat=True)
                )
        summed, members = defaultdict(Counter), defaultdict(list)
        for reply in batch:
            version = versions[reply["conversation__prompt_version_id"]]
            # chat.selectors.output_format_for, on plain values: what the request asked, else the version's.
            output_format = (reply["conversation__parameters"] or {}).get("output_format") or version.output_format
            figures = reply_figures(
                ReplyFacts(
                    status=reply["status"],
                    error_code=reply["error_code"],
                    finish_reason=reply["finish_reason"],
                    created_at=reply["created_at"],
                    finished_at=reply["finished_at"],
                    ttft_ms=reply["ttft_ms"],
                    prompt_tokens=reply["prompt_tokens"],
                    completion_tokens=reply["completion_tokens"],
                    tokens_per_s=reply["tokens_per_s"],
                    feedback=reply["feedback"],
                    flagged=reply["flagged_at"] is not None,
                    has_output_format=bool(output_format) and output_format.get("type") != "text",
                    retrieval=reply["retrieval"] or {},
                )
            )
            api = reply["conversation__kind"] == "api"
            version_labels = labels[version.pk] if api and not reply["variant"] else []
            key = (
                version.prompt_id,
                version.number,
                served_label(
                    variant=reply["variant"],
                    asked_label=asked_label(reply["requested_model"], version_labels),
                    api=api,
                    version_labels=version_labels,
                    newest=version.number == newest[version.prompt_id],
                ),
                reply["variant"],
                reply["model_name"] or reply["conversation__model_name"],
                hour_of(reply["created_at"]),
            )
            summed[key].update(figures)
            members[key].append((reply["pk"], figures))
        counted = []
        for key, amounts in summed.items():
            columns, tallies = split_amounts(dict(amounts))
            named = dict(zip(ROLLUP_KEY, key))
            rollup_id = upsert_add(ReplyRollup, ROLLUP_KEY, named, columns, rollup_day(named))
            for (kind, name), tally_amounts in tallies.items():
                upsert_add(RollupTally, TALLY_KEY, {"rollup_id": rollup_id, "kind": kind, "name": name}, tally_amounts)
            counted += [
                CountedReply(message_id=message_id, rollup_id=rollup_id, figures=figures)
                for message_id, figures in members[key]
            ]
        CountedReply.objects.bulk_create(counted)


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0001_initial")]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]

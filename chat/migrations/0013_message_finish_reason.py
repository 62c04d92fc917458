from django.db import migrations, models


def mark_cut_replies(apps, schema_editor):
    """Replies stored before the finish reason was kept: one whose reply tokens reached the maximum it
    was written with was cut there (the engine ends a reply at that count), so it is marked and can be
    continued; the others stay unknown (""). A reply whose last allowed token was the end of text
    reads as cut too: it shows Continue, which then writes little or nothing."""
    Message = apps.get_model("chat", "Message")
    cut = []
    for pk, completion_tokens, parameters in (
        Message.objects.filter(role="assistant", status="complete", completion_tokens__isnull=False)
        .values_list("pk", "completion_tokens", "parameters")
        .iterator(chunk_size=2000)
    ):
        limit = (parameters or {}).get("max_new_tokens")
        if isinstance(limit, int) and limit > 0 and completion_tokens >= limit:
            cut.append(pk)
    for start in range(0, len(cut), 500):
        Message.objects.filter(pk__in=cut[start : start + 500]).update(finish_reason="length")


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0012_knowledge_attached"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="finish_reason",
            field=models.CharField(blank=True, max_length=16),
        ),
        migrations.RunPython(mark_cut_replies, migrations.RunPython.noop),
    ]

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("prompts", "0002_version_variables_provenance"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="FineTuneJob",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("queued", "Queued"),
                            ("running", "Running"),
                            ("finished", "Finished"),
                            ("failed", "Failed"),
                            ("cancelled", "Cancelled"),
                        ],
                        default="queued",
                        max_length=16,
                    ),
                ),
                ("done", models.PositiveIntegerField(default=0)),
                ("total", models.PositiveIntegerField(default=0)),
                ("note", models.CharField(blank=True, max_length=300)),
                ("error", models.TextField(blank=True)),
                ("cancel_requested", models.BooleanField(default=False)),
                ("worker", models.CharField(blank=True, max_length=200)),
                ("dispatched_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("heartbeat_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                ("name", models.CharField(max_length=100, unique=True)),
                ("base_model", models.CharField(max_length=200)),
                ("case_filters", models.JSONField(default=dict)),
                ("case_ids", models.JSONField(default=list)),
                ("data_hash", models.CharField(blank=True, max_length=64)),
                ("example_count", models.PositiveIntegerField(default=0)),
                ("token_count", models.PositiveIntegerField(default=0)),
                (
                    "objective",
                    models.CharField(
                        choices=[("sft", "SFT (answer → expected)"), ("dpo", "DPO (expected preferred to actual)")],
                        default="sft",
                        max_length=8,
                    ),
                ),
                (
                    "method",
                    models.CharField(
                        choices=[("lora", "LoRA"), ("qlora", "QLoRA (4-bit base, CUDA)")], default="lora", max_length=8
                    ),
                ),
                ("hyperparameters", models.JSONField(default=dict)),
                ("device", models.CharField(blank=True, max_length=40)),
                ("epoch", models.FloatField(blank=True, null=True)),
                ("tokens_seen", models.PositiveBigIntegerField(default=0)),
                ("tokens_per_s", models.FloatField(blank=True, null=True)),
                ("metrics", models.JSONField(default=list)),
                ("log_tail", models.TextField(blank=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="fine_tunes",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "prompt",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="fine_tunes", to="prompts.prompt"
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
            },
        ),
        migrations.CreateModel(
            name="FineTunedModel",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100, unique=True)),
                ("base_model", models.CharField(max_length=200)),
                ("training_config", models.JSONField(default=dict)),
                ("case_ids", models.JSONField(default=list)),
                ("data_hash", models.CharField(max_length=64)),
                ("metrics", models.JSONField(default=dict)),
                ("size_bytes", models.PositiveBigIntegerField(default=0)),
                ("merge_state", models.CharField(blank=True, max_length=10)),
                ("merge_error", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "job",
                    models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="result",
                        to="finetune.finetunejob",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
            },
        ),
    ]

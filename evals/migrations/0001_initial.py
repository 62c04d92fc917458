import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("chat", "0003_flags_and_model_choice"),
        ("prompts", "0002_version_variables_provenance"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Tag",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=60, unique=True)),
            ],
            options={
                "ordering": ["name"],
            },
        ),
        migrations.CreateModel(
            name="Evaluation",
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
                ("model_name", models.CharField(max_length=200)),
                ("case_filters", models.JSONField(default=dict)),
                ("case_ids", models.JSONField(default=list)),
                ("scorers", models.JSONField(default=list)),
                ("shared", models.BooleanField(default=True)),
                ("passed", models.PositiveIntegerField(default=0)),
                (
                    "created_by",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="evaluations",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "prompt_version",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="evaluations",
                        to="prompts.promptversion",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
            },
        ),
        migrations.CreateModel(
            name="FailureCase",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("input_variables", models.JSONField(blank=True, default=dict)),
                ("input_text", models.TextField(blank=True)),
                ("context", models.JSONField(blank=True, default=list)),
                ("actual", models.TextField(blank=True)),
                ("expected", models.TextField()),
                ("input_digest", models.CharField(db_index=True, editable=False, max_length=64)),
                ("note", models.TextField(blank=True)),
                (
                    "split",
                    models.CharField(choices=[("train", "Train"), ("eval", "Eval")], default="train", max_length=8),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[("open", "Open"), ("fixed", "Fixed"), ("wontfix", "won't fix")],
                        default="open",
                        max_length=8,
                    ),
                ),
                (
                    "review",
                    models.CharField(
                        choices=[("approved", "Approved"), ("pending", "Pending")], default="approved", max_length=10
                    ),
                ),
                (
                    "source",
                    models.CharField(
                        choices=[
                            ("chat", "Chat"),
                            ("playground", "Playground"),
                            ("api", "Api"),
                            ("manual", "Manual"),
                            ("import", "Import"),
                        ],
                        default="manual",
                        max_length=12,
                    ),
                ),
                ("model_name", models.CharField(blank=True, max_length=200)),
                ("shared", models.BooleanField(default=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="failure_cases",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "prompt_version",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="failure_cases",
                        to="prompts.promptversion",
                    ),
                ),
                (
                    "source_conversation",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="chat.conversation",
                    ),
                ),
                (
                    "source_message",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="chat.message",
                    ),
                ),
                ("tags", models.ManyToManyField(blank=True, related_name="cases", to="evals.tag")),
            ],
            options={
                "ordering": ["-created_at", "-id"],
            },
        ),
        migrations.CreateModel(
            name="ImportDraft",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("filename", models.CharField(max_length=200)),
                ("columns", models.JSONField(default=list)),
                ("rows", models.JSONField(default=list)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "owner",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to=settings.AUTH_USER_MODEL
                    ),
                ),
            ],
        ),
        migrations.CreateModel(
            name="CaseSelection",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
                ("filters", models.JSONField(default=dict)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "owner",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="case_selections",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["name", "id"],
                "constraints": [models.UniqueConstraint(fields=("owner", "name"), name="one_selection_name_per_owner")],
            },
        ),
        migrations.CreateModel(
            name="EvaluationResult",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("output", models.TextField(blank=True)),
                ("scores", models.JSONField(default=dict)),
                ("scorer_passed", models.BooleanField(default=False)),
                ("passed", models.BooleanField(default=False)),
                ("verdict", models.CharField(blank=True, choices=[("pass", "Pass"), ("fail", "Fail")], max_length=4)),
                ("error", models.TextField(blank=True)),
                ("completion_tokens", models.PositiveIntegerField(blank=True, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "evaluation",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="results", to="evals.evaluation"
                    ),
                ),
                (
                    "verdict_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "case",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="results", to="evals.failurecase"
                    ),
                ),
            ],
            options={
                "ordering": ["id"],
                "constraints": [models.UniqueConstraint(fields=("evaluation", "case"), name="one_result_per_case")],
            },
        ),
        migrations.AddIndex(
            model_name="failurecase",
            index=models.Index(fields=["prompt_version", "input_digest"], name="evals_failu_prompt__93dc77_idx"),
        ),
        migrations.AddIndex(
            model_name="failurecase",
            index=models.Index(fields=["split", "status"], name="evals_failu_split_e81feb_idx"),
        ),
    ]

"""Fine-tune jobs (staff only) and the registry of the models they produce."""

from django.conf import settings
from django.db import models
from django.urls import reverse

from knowledge import tuned_embedders
from studio.jobs import JobRecord


class FineTuneJob(JobRecord):
    """A LoRA/QLoRA training run on failure cases. `done`/`total` count optimizer steps."""

    TASK = "finetune.run_fine_tune"

    class Objective(models.TextChoices):
        SFT = "sft", "SFT (answer → expected)"
        DPO = "dpo", "DPO (expected preferred to actual)"

    class Method(models.TextChoices):
        LORA = "lora", "LoRA"
        QLORA = "qlora", "QLoRA (4-bit base, CUDA)"

    name = models.CharField(max_length=100, unique=True)  # the resulting model's name
    base_model = models.CharField(max_length=200)
    prompt = models.ForeignKey("prompts.Prompt", on_delete=models.PROTECT, related_name="fine_tunes")
    # The version the cases are trained as served through (its instructions, examples, retrieval);
    # None: each case's own version (jobs launched before the choice existed).
    prompt_version = models.ForeignKey(
        "prompts.PromptVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    case_filters = models.JSONField(default=dict)  # which cases (evals.selectors filters)
    case_ids = models.JSONField(default=list)  # exactly the cases trained on, fixed at launch
    data_hash = models.CharField(max_length=64, blank=True)  # sha256 of the rendered training rows
    example_count = models.PositiveIntegerField(default=0)
    token_count = models.PositiveIntegerField(default=0)  # of the rendered rows, by the base tokenizer
    objective = models.CharField(max_length=8, choices=Objective.choices, default=Objective.SFT)
    method = models.CharField(max_length=8, choices=Method.choices, default=Method.LORA)
    hyperparameters = models.JSONField(default=dict)  # studio.llm.training.TrainingConfig fields
    device = models.CharField(max_length=40, blank=True)  # where it ran: "cpu", "cuda x 2"
    epoch = models.FloatField(null=True, blank=True)
    tokens_seen = models.PositiveBigIntegerField(default=0)  # non-padding tokens trained on so far
    tokens_per_s = models.FloatField(null=True, blank=True)
    metrics = models.JSONField(default=list)  # [{"step", "loss", "eval_loss", "learning_rate", "epoch"}]
    log_tail = models.TextField(blank=True)  # the last lines the trainer printed
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="fine_tunes")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("finetune:job", args=[self.pk])

    @property
    def losses(self) -> list[dict]:
        return [m for m in self.metrics if "loss" in m or "eval_loss" in m]


class FineTunedModel(models.Model):
    """A finished adapter in the registry: what it is, what it learned from, how it did.

    Its files live in STUDIO_ADAPTERS_DIR/<name>/. Replies and evaluations that used it keep
    its name as text when it is deleted."""

    name = models.CharField(max_length=100, unique=True)
    base_model = models.CharField(max_length=200)
    job = models.OneToOneField(FineTuneJob, on_delete=models.SET_NULL, null=True, blank=True, related_name="result")
    training_config = models.JSONField(default=dict)
    case_ids = models.JSONField(default=list)
    data_hash = models.CharField(max_length=64)
    metrics = models.JSONField(default=dict)
    size_bytes = models.PositiveBigIntegerField(default=0)
    # Merging into a full model runs in a job worker: "" (not asked), "merging", "ready", "failed".
    merge_state = models.CharField(max_length=10, blank=True)
    merge_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return self.name


class EmbedderFineTune(JobRecord):
    """A fine-tune of a knowledge base's embedder (the bundled all-MiniLM-L6-v2, or one tuned from
    it) on the base's judged passages, its retrieval tests' questions and, when asked, questions a
    served model wrote for its passages; measured on a held-out part of one retrieval test before
    and after (finetune/embedder_runner.py). `done`/`total` count the phase's steps: replies
    generated, then optimizer steps."""

    TASK = "finetune.run_embedder_fine_tune"

    knowledge_base = models.ForeignKey("knowledge.KnowledgeBase", on_delete=models.CASCADE, related_name="+")
    # The embedder it starts from and is measured against: what the base pinned at launch.
    start_embedder = models.CharField(max_length=100)
    retrieval_test = models.ForeignKey(
        "knowledge.RetrievalTest", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    held_out_share = models.FloatField(default=0.3)
    held_out = models.JSONField(default=list)  # ordinals of the test's questions never trained on, fixed at launch
    # {"model", "chunks"}: questions asked of a served model for that many passages; {}: none.
    generate = models.JSONField(default=dict, blank=True)
    hyperparameters = models.JSONField(default=dict)  # studio.llm.embedder_training.EmbedderTrainingConfig fields
    pairs = models.JSONField(default=dict, blank=True)  # {"judged", "tests", "generated", "total"}
    recall_before = models.FloatField(null=True, blank=True)  # held-out recall@5, the start embedder
    recall_after = models.FloatField(null=True, blank=True)
    mrr_before = models.FloatField(null=True, blank=True)  # held-out MRR@10
    mrr_after = models.FloatField(null=True, blank=True)
    losses = models.JSONField(default=list, blank=True)  # [{"step", "loss"}]
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"embedder fine-tune {self.pk}"

    def get_absolute_url(self):
        return reverse("finetune:embedder_job", args=[self.pk])


class TunedEmbedder(models.Model):
    """A tuned embedder in the registry, beside the adapters: the base it was tuned for (the only
    one that may pin it, as "tuned:<id>"), how the base's held-out questions were found before and
    after, what it learned from. Its files live in STUDIO_EMBEDDERS_DIR/<id>/ (the bundled model's
    layout and a manifest: knowledge/tuned_embedders.py)."""

    job = models.OneToOneField(
        EmbedderFineTune, on_delete=models.SET_NULL, null=True, blank=True, related_name="result"
    )
    knowledge_base = models.ForeignKey(
        "knowledge.KnowledgeBase", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    tuned_from = models.CharField(max_length=100)
    folder = models.CharField(max_length=500)
    recall_before = models.FloatField(null=True, blank=True)
    recall_after = models.FloatField(null=True, blank=True)
    mrr_before = models.FloatField(null=True, blank=True)
    mrr_after = models.FloatField(null=True, blank=True)
    held_out_questions = models.PositiveIntegerField(default=0)
    pairs = models.JSONField(default=dict)
    training_config = models.JSONField(default=dict)
    size_bytes = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return self.pinned_name

    @property
    def pinned_name(self) -> str:
        """What a knowledge base pins to embed with it."""
        return tuned_embedders.pinned_name(self.pk)

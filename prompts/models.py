import hashlib
from functools import cached_property

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.urls import reverse

from studio.llm.constraints import OutputFormat
from studio.llm.replies import SamplingParameters, sampling_in_range
from studio.llm.tools import ToolUse, openai_tool_choice, openai_tools

SLUG_VALIDATOR = RegexValidator(r"^[a-z0-9]+(?:-[a-z0-9]+)*$", "Use lower-case letters, digits and single hyphens.")
LABEL_VALIDATOR = RegexValidator(r"^[a-z0-9][a-z0-9_-]{0,39}$", "Use lower-case letters, digits, - and _ (40 at most).")
LATEST = "latest"  # implicit label: always the newest version


class ImmutableVersionError(Exception):
    """A saved prompt version never changes: make a new version instead."""


class Prompt(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True, validators=[SLUG_VALIDATOR])
    description = models.TextField(blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="prompts")
    editors = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="editable_prompts")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("prompts:detail", args=[self.slug])

    def can_edit(self, user) -> bool:
        """New versions and label moves: the owner, the editors they named, and staff."""
        if not getattr(user, "is_authenticated", False):
            return False
        return user.is_staff or user.pk == self.owner_id or self.editors.filter(pk=user.pk).exists()


class PromptVersionQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise ImmutableVersionError("Prompt versions are immutable: create a new version instead of updating one.")


class PromptVersion(models.Model):
    """One immutable state of a prompt: what evaluations measure and chats record."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    instructions = models.TextField(blank=True)  # the system message
    template = models.TextField()  # the user turn, Jinja2 with {{ variables }}
    # The variables the template reads, in order of first use: computed once when the version
    # is saved (parsing a template on every page view would let one template slow every page).
    variables = models.JSONField(default=list, blank=True, editable=False)
    # Ordered few-shot examples: [{"input": ..., "output": ...}]; they go between the
    # system message and the user turn as user/assistant pairs.
    examples = models.JSONField(default=list, blank=True)
    # Or examples chosen per input (prompts/examples.py): {"from": {"selection": id} | {"split": "train"},
    # "k": 6, "balance": 2 | null}, the k cases of the prompt most like the input. {}: the fixed
    # `examples` above. A version has one or the other, never both.
    example_source = models.JSONField(default=dict, blank=True)
    model_name = models.CharField(max_length=200, blank=True)  # blank: whichever model the worker serves
    temperature = models.FloatField(null=True, blank=True)  # null: the studio's default
    top_p = models.FloatField(null=True, blank=True)
    max_new_tokens = models.PositiveIntegerField(null=True, blank=True)
    stop = models.JSONField(default=list, blank=True)  # stop sequences
    # The shape of its answers, enforced while decoding (studio/llm/constraints.py): {"type": "text"}
    # (free), "json", "json_schema" + schema, "regex" + pattern, "choice" + choices.
    output_format = models.JSONField(default=dict, blank=True)
    # Knowledge it retrieves from (knowledge.retrieval): {"knowledge_bases": [{"id", "name"}], "k",
    # "mode", "min_score", "query": a variable's name or "" (what the person wrote), "layout":
    # "template" (its template lays out `passages`) or "system" (numbered sources in the system
    # turn)}. {}: none. An imported version keeps the names of bases this studio lacks, with id None.
    retrieval = models.JSONField(default=dict, blank=True)
    # The tools its replies may call (studio/llm/tools.py), a ToolUse: {"tools": [{"name",
    # "description", "parameters", "strict"}], "choice": "auto" | "none" | "required" | "function",
    # "function": the named one, "parallel": bool}. {}: none.
    tools = models.JSONField(default=dict, blank=True)
    commit_message = models.CharField(max_length=500, blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField()
    # Imported versions: `author` is whoever imported it and `created_at` when; the file's
    # claims ("imported; originally by alice, 2020-01-02 10:00 UTC") stay text, never an account.
    provenance = models.CharField(max_length=500, blank=True)

    objects = PromptVersionQuerySet.as_manager()

    class Meta:
        ordering = ["prompt", "-number"]
        constraints = [models.UniqueConstraint(fields=["prompt", "number"], name="one_number_per_prompt_version")]

    def __str__(self):
        return f"{self.prompt.slug} v{self.number}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ImmutableVersionError(f"{self} is immutable: create a new version instead of changing it.")
        super().save(*args, **kwargs)

    def get_absolute_url(self):
        return reverse("prompts:version", args=[self.prompt.slug, self.number])

    def editable_fields(self) -> dict:
        """The fields a person writes, as `services.clean_version_fields` and exports take them."""
        return {
            "instructions": self.instructions,
            "template": self.template,
            "examples": self.example_source or self.examples,
            "model": self.model_name,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "stop": self.stop,
            "output_format": self.answer_format,
            "retrieval": self.retrieval or {},
            **self.openai_tool_fields,
            "commit_message": self.commit_message,
        }

    @property
    def openai_tool_fields(self) -> dict:
        """Its tools in OpenAI's request form (`tools`, `tool_choice`, `parallel_tool_calls`), as the
        version form, exports, the prompt API and clean_version_fields take them; none: `tools` []."""
        tool_use = self.tool_use
        if not tool_use:
            return {"tools": [], "tool_choice": None, "parallel_tool_calls": None}
        return {
            "tools": openai_tools(tool_use),
            "tool_choice": openai_tool_choice(tool_use),
            "parallel_tool_calls": tool_use["parallel"],
        }

    @property
    def answer_format(self) -> OutputFormat:
        """Its output format ({"type": "text"} for versions made before formats existed)."""
        return self.output_format or {"type": "text"}

    @property
    def tool_use(self) -> ToolUse | None:
        """The tools its replies may call, or None."""
        return self.tools or None

    @property
    def parameters(self) -> dict:
        return {
            "model": self.model_name,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "stop": list(self.stop),
        }

    @cached_property
    def _sampling_in_range(self) -> tuple[SamplingParameters, list[str]]:
        return sampling_in_range(
            {
                "temperature": self.temperature,
                "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens,
                "stop": list(self.stop or []),
            },
            max_new_tokens_cap=settings.LLM_MAX_NEW_TOKENS_CAP,
        )

    @property
    def reply_sampling(self) -> SamplingParameters:
        """The sampling its replies are written with (chats, the APIs, evaluations): the settings it
        gives, within the rule's ranges. `parameters` stays what was saved; a version saved before
        the rule may hold more (studio.llm.replies.sampling_in_range)."""
        return self._sampling_in_range[0]

    @property
    def sampling_saved_out_of_range(self) -> list[str]:
        """The settings saved before the rule with values now out of range, which its replies bring
        into range (its page says so)."""
        return self._sampling_in_range[1]


class PromptLabel(models.Model):
    """A name (production, staging, ...) that points at one version of a prompt."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="labels")
    name = models.CharField(max_length=40, validators=[LABEL_VALIDATOR])
    # RESTRICT: a labelled version cannot be deleted alone, but the whole prompt can.
    version = models.ForeignKey(PromptVersion, on_delete=models.RESTRICT, related_name="labels")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["prompt", "name"], name="one_label_name_per_prompt")]

    def __str__(self):
        return f"{self.prompt.slug}@{self.name}"


class AppendOnlyError(Exception):
    """The label history is an audit trail: rows are added, never changed or deleted on their own."""


class LabelMoveQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("The label history is append-only.")

    def delete(self):
        raise AppendOnlyError("The label history is append-only (it goes only with its prompt).")


class LabelMove(models.Model):
    """Audit trail: who pointed a label at which version, from which, when. Append-only; deleting
    the whole prompt removes it (Django's cascade deletes rows without calling these methods)."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="label_moves")
    label = models.CharField(max_length=40)
    from_number = models.PositiveIntegerField(null=True, blank=True)  # null: the label was new
    to_number = models.PositiveIntegerField()
    moved_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    moved_at = models.DateTimeField()
    provenance = models.CharField(max_length=500, blank=True)  # imported moves: the file's claims, as text

    objects = LabelMoveQuerySet.as_manager()

    class Meta:
        ordering = ["-moved_at", "-id"]

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("The label history is append-only: a recorded move never changes.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("The label history is append-only (it goes only with its prompt).")


class PromptSplit(models.Model):
    """An A/B test: `prompt:<slug>` requests (no @label, no @vN) are shared out between labels by
    weight, each end user always to the same one (prompts/splits.py). At most one runs per prompt;
    an ended split stays, with its window, for the comparison of what it served."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="splits")
    # [{"label": "production", "weight": 0.9}, {"label": "candidate", "weight": 0.1}]: the first is
    # the control the others are compared with; the weights add up to 1.
    variants = models.JSONField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)  # null: running
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    promoted_label = models.CharField(max_length=40, blank=True)  # the variant promote made production

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["prompt"], condition=models.Q(ended_at__isnull=True), name="one_running_split_per_prompt"
            )
        ]

    def __str__(self):
        shares = ", ".join(f"{v['label']} {v['weight']:g}" for v in self.variants)
        return f"{self.prompt.slug} split ({shares})"

    @property
    def running(self) -> bool:
        return self.ended_at is None

    @property
    def labels(self) -> list[str]:
        return [variant["label"] for variant in self.variants]

    def variant_for(self, key: str) -> str:
        """The label that serves the end user `key`: where their fixed place in [0, 1) (a hash of
        the prompt and the key) falls among the cumulative weights. The same key gets the same
        label for as long as the weights stay."""
        digest = hashlib.sha256(f"{self.prompt_id}:{key}".encode("utf-8", "surrogatepass")).digest()
        place = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
        reached = 0.0
        for variant in self.variants:
            reached += variant["weight"]
            if place < reached:
                return variant["label"]
        return self.variants[-1]["label"]  # the weights' sum fell short of 1 by rounding

    def to_dict(self) -> dict:
        return {
            "id": self.pk,
            "prompt": self.prompt.slug,
            "variants": [{"label": v["label"], "weight": v["weight"]} for v in self.variants],
            "running": self.running,
            "created_by": self.created_by.get_username(),
            "created_at": self.created_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "promoted": self.promoted_label or None,
        }

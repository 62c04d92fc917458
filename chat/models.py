from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.urls import reverse


class ConversationQuerySet(models.QuerySet):
    def untouched(self):
        """Chats opened with "New chat" and left as they were: no message, title or system prompt."""
        return self.filter(
            kind=Conversation.Kind.CHAT, title=Conversation.DEFAULT_TITLE, system_prompt="", prompt_version=None
        ).exclude(Exists(Message.objects.filter(conversation=OuterRef("pk"))))


class Conversation(models.Model):
    class Kind(models.TextChoices):
        CHAT = "chat"
        PLAYGROUND = "playground"  # a prompt playground run: same path, kept out of the chat list
        API = "api"  # a request to the OpenAI-compatible API (/v1/chat/completions), kept per token owner
        EVALUATION = "evaluation"  # one case of a running evaluation (evals/): removed when it is scored
        RETRIEVAL = "retrieval"  # a question's rewrites for a search (query expansion): removed when read

    DEFAULT_TITLE = "New conversation"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CHAT)
    title = models.CharField(max_length=200, default=DEFAULT_TITLE)
    system_prompt = models.TextField(blank=True)
    # Started from a prompt version: its few-shot examples and parameters apply to every
    # reply, and the variables it was rendered with are kept as evidence.
    prompt_version = models.ForeignKey(
        "prompts.PromptVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="conversations"
    )
    prompt_variables = models.JSONField(default=dict, blank=True)
    # Started from a version whose template has one variable: every message the person sends is that
    # variable's value and goes through the template (else only the first turn did).
    template_every_turn = models.BooleanField(default=False)
    # The model replies come from: "" for the served base model, or a fine-tuned one's name.
    model_name = models.CharField(max_length=200, blank=True)
    # Sampling asked for by an API request (temperature, top_p, max_new_tokens, stop, seed): they
    # override the prompt version's and the studio's defaults for its reply.
    parameters = models.JSONField(default=dict, blank=True)
    # The job an unlisted conversation answers for ("evaluation:12"): withdrawn with it when it ends.
    job = models.CharField(max_length=40, blank=True, db_index=True)
    # Messages form a tree (an edit or a regeneration starts a branch; nothing is thrown away).
    # The active branch: from this first message, follow each message's `active_child`.
    active_root = models.ForeignKey("Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # Knowledge attached to the chat: every reply searches these bases and documents, with the
    # owner's access (knowledge.retrieval), besides what its prompt version attaches.
    knowledge_bases = models.ManyToManyField("knowledge.KnowledgeBase", blank=True, related_name="+")
    documents = models.ManyToManyField("knowledge.Document", blank=True, related_name="+")
    # How: {"k", "mode", "min_score", "when_nothing_found": "say"|"answer"} ({}: the defaults, or the
    # prompt version's).
    retrieval_settings = models.JSONField(default=dict, blank=True)
    pinned_at = models.DateTimeField(null=True, blank=True)  # pinned conversations head the sidebar
    archived_at = models.DateTimeField(null=True, blank=True)  # archived ones leave it (search still finds them)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self):
        return self.title

    @property
    def group_name(self) -> str:
        return f"conversation-{self.pk}"

    def get_absolute_url(self):
        return reverse("chat:conversation", args=[self.pk])


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        QUEUED = "queued"  # waiting for a model worker
        STREAMING = "streaming"  # a worker holds the lease and is generating
        COMPLETE = "complete"
        STOPPED = "stopped"  # the user stopped it; the partial text is kept
        FAILED = "failed"  # `error` says why

    IN_PROGRESS = (Status.QUEUED, Status.STREAMING)

    class ErrorCode(models.TextChoices):
        """Why a reply failed, for code that acts on it (the person reads `error`)."""

        NO_WORKER = "no_worker"  # queued past its deadline with no model worker running
        BUSY = "busy"  # queued past its deadline while workers were busy with others
        LOAD_FAILED = "load_failed"  # the only workers could not load the model
        WORKER_LOST = "worker_lost"  # the worker writing it stopped (its lease lapsed)
        MODEL_FAILED = "model_failed"  # the model or engine failed on it (too long, stalled, an engine error)
        # Its output format could not be followed (the grammar's limits were reached while decoding):
        # the version's format, not the model, is what to change.
        OUTPUT_FORMAT_FAILED = "output_format_failed"
        OUT_OF_MEMORY = "out_of_memory"  # the model's device ran out of memory (a shorter conversation may fit)

    # No worker could answer: a job waiting on these replies gives up, saying why.
    NO_ANSWER = (ErrorCode.NO_WORKER, ErrorCode.BUSY, ErrorCode.LOAD_FAILED)

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    # The message this one follows (None: a first message). Siblings (same parent) are the
    # alternatives an edit or a regeneration made; `active_child` is the one last shown below this.
    parent = models.ForeignKey("self", on_delete=models.CASCADE, null=True, blank=True, related_name="children")
    active_child = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    # A user turn rendered from a prompt version's template: the values it was rendered with (a
    # case flagged from its reply keeps them as its input's variables).
    variables = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    error = models.TextField(blank=True)
    error_code = models.CharField(max_length=32, choices=ErrorCode.choices, blank=True)
    model_name = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    # While queued or streaming: the reply is failed by whoever sees this time pass first
    # (a worker renews it while it generates, so only a dead or missing worker lets it lapse).
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # The channel of the worker generating this reply: stop and catch-up requests go there.
    worker_channel = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Set when someone flags this reply as a failure case (evals/); the reply shows it.
    flagged_at = models.DateTimeField(null=True, blank=True)
    # A reply: the sampling it was written with (temperature, top_p, max_new_tokens, seed, stop),
    # after the chat's, the person's and the model's defaults were applied.
    parameters = models.JSONField(default=dict, blank=True)

    class Feedback(models.TextChoices):
        UP = "up"
        DOWN = "down"

    feedback = models.CharField(max_length=4, choices=Feedback.choices, blank=True)  # thumbs on a reply
    # A reply that used retrieval: what was searched and the numbered sources the model read, each
    # with its chunk id (knowledge.retrieval's record); its citations are built from this. {}: none.
    retrieval = models.JSONField(default=dict, blank=True)
    # A reply to a prompt version whose examples are chosen per input (prompts/examples.py): the ids
    # of the failure cases it read as its few-shot examples, in the order it read them. []: none
    # chosen (fixed examples are on the version).
    example_cases = models.JSONField(default=list, blank=True)
    # Why a finished reply ended, as the engine said: "stop" (the model ended it, or a stop string),
    # "length" (cut at its maximum tokens: the page marks it and offers Continue), "cancelled"
    # (stopped), "error"; "" before it ends (and for replies stored before this was kept).
    finish_reason = models.CharField(max_length=16, blank=True)
    # A reply asked of another model than the conversation's ("" : the conversation's).
    requested_model = models.CharField(max_length=200, blank=True)
    # The A/B variant (a label of the prompt's split) that served a `prompt:<slug>` request; "" when
    # no split chose it.
    variant = models.CharField(max_length=64, blank=True)
    # Side by side: a second reply to the same message, written beside `side_of` (in the same batch)
    # by another model, for the person to pick the better one.
    side_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="side_replies")

    class Meta:
        ordering = ["id"]
        constraints = [
            # At most one reply in progress per conversation: a second "send" while the
            # model is still answering would interleave two replies.
            models.UniqueConstraint(
                fields=["conversation"],
                condition=Q(status__in=["queued", "streaming"], side_of__isnull=True),
                name="one_reply_in_progress_per_conversation",
            )
        ]
        indexes = [models.Index(fields=["status", "lease_expires_at"])]

    def __str__(self):
        return f"{self.role} #{self.pk} ({self.status})"

    @property
    def in_progress(self) -> bool:
        return self.status in self.IN_PROGRESS

    @property
    def cut(self) -> bool:
        """A finished reply the maximum tokens cut short (Continue extends it: services.reply_continue)."""
        return self.status == self.Status.COMPLETE and self.finish_reason == "length"

    @property
    def continuable(self) -> bool:
        """Cut, and the last reply of its branch (a reply below it was written reading the cut text)."""
        return self.cut and self.role == self.Role.ASSISTANT and self.active_child_id is None

    @property
    def being_continued(self) -> bool:
        """Queued again, or being written, to write on from its cut text (services.reply_continue)."""
        return self.in_progress and self.finish_reason == "length"

    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "ttft_ms": self.ttft_ms,
            "tokens_per_s": self.tokens_per_s,
        }

    def to_frame(self, siblings: list[int] | None = None) -> dict:
        """The message as the WebSocket protocol's `message` object (README). `siblings`: the ids
        of the messages with its parent, in order (itself included; alone when not given)."""
        frame = {
            "id": self.pk,
            "role": self.role,
            "content": self.content,
            "status": self.status,
            "parent": self.parent_id,
            "siblings": siblings or [self.pk],
        }
        if self.side_of_id:
            frame["side_of"] = self.side_of_id
        if self.error:
            frame["error"] = self.error
        if self.model_name:
            frame["model"] = self.model_name
        if self.finish_reason and not self.in_progress:
            frame["finish_reason"] = self.finish_reason
            if self.cut:
                frame["completion_tokens"] = self.completion_tokens
        return frame


class ChatDefaults(models.Model):
    """A person's own sampling defaults for new replies in their chats (the settings page)."""

    owner = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_defaults")
    parameters = models.JSONField(default=dict, blank=True)  # chat.sampling.clean_sampling's output

    def __str__(self):
        return f"chat defaults of {self.owner}"


class ModelWorker(models.Model):
    """A running model worker announces itself here, so pages can show the model in use."""

    class State(models.TextChoices):
        LOADING = "loading"
        READY = "ready"
        FAILED = "failed"  # the model could not be loaded: `error` says why

    channel_name = models.CharField(max_length=200, unique=True)
    hostname = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    model_name = models.CharField(max_length=200, blank=True)
    description = models.CharField(max_length=300, blank=True)  # model, device, quantization
    state = models.CharField(max_length=16, choices=State.choices, default=State.LOADING)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField()

    class Meta:
        ordering = ["-last_seen_at"]

    def __str__(self):
        return f"{self.hostname}:{self.pid} {self.state}"

"""Per-chat sampling: what a person sets for one chat or as their own defaults, checked, and
what applies to a reply (the chat's setting, else the prompt version's, else the person's
default, else the studio's)."""

from __future__ import annotations

from django.conf import settings

from studio.input_checks import InputError, parsed_number, unstorable_reason
from studio.llm.replies import MAX_STOP_CHARS, MAX_STOP_SEQUENCES, SamplingParameters, sampling_checked
from studio.llm.replies import SamplingError as ReplySamplingError

from .models import ChatDefaults, Conversation

# name -> (label, a whole number): the panel's fields; their ranges are the shared rule's
# (studio.llm.replies.sampling_checked), which the API, imports and prompt versions check too.
SAMPLING_FIELDS = {
    "temperature": ("Temperature", False),
    "top_p": ("Top-p", False),
    "max_new_tokens": ("Maximum tokens", True),
    "seed": ("Seed", True),
}
STOP_LABEL = "Stop sequences"


class SamplingError(ValueError):
    """A setting out of range or malformed; the message names the field by its label, `field` is its
    name, `code` is the shared rule's (invalid_sampling)."""

    code = ReplySamplingError.code

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def clean_sampling(values) -> SamplingParameters:
    """Form values (a QueryDict or a dict of text) as stored parameters: blank fields are left out
    (they fall back to what is below them); stop sequences one per line."""
    typed = {}
    for name, (label, whole) in SAMPLING_FIELDS.items():
        text = str(values.get(name, "") or "").strip()
        if not text:
            continue
        try:
            typed[name] = parsed_number(text, whole=whole)
        except InputError as exc:
            raise SamplingError(f"{label} {exc}.", name) from None
    stop_text = str(values.get("stop", "") or "")
    if len(stop_text) > MAX_STOP_SEQUENCES * (MAX_STOP_CHARS + 2):  # refused before splitting a huge text
        raise SamplingError(
            f"{STOP_LABEL} must be at most {MAX_STOP_SEQUENCES}, each at most {MAX_STOP_CHARS} characters.", "stop"
        )
    typed["stop"] = [line for line in stop_text.replace("\r\n", "\n").split("\n") if line.strip()]
    if any(unstorable_reason(line) for line in typed["stop"]):
        raise SamplingError(f"{STOP_LABEL} cannot hold control characters such as NUL.", "stop")
    try:
        return sampling_checked(typed, max_new_tokens_cap=settings.LLM_MAX_NEW_TOKENS_CAP)
    except ReplySamplingError as exc:
        label = SAMPLING_FIELDS[exc.field][0] if exc.field in SAMPLING_FIELDS else STOP_LABEL
        raise SamplingError(f"{label} {exc.requirement}.", exc.field) from None


def studio_defaults() -> dict:
    return {
        "temperature": settings.LLM_TEMPERATURE,
        "top_p": settings.LLM_TOP_P,
        "max_new_tokens": settings.LLM_MAX_NEW_TOKENS,
        "seed": None,
        "stop": [],
    }


def user_defaults(user) -> dict:
    defaults = ChatDefaults.objects.filter(owner=user).values_list("parameters", flat=True).first()
    return dict(defaults or {})


def version_parameters(version) -> SamplingParameters:
    """The settings the version gives, within the ranges (a version saved before the rule with more
    is brought into them: PromptVersion.reply_sampling)."""
    return dict(version.reply_sampling) if version is not None else {}


def sampling_in_effect(conversation: Conversation) -> dict[str, tuple[object, str]]:
    """Each setting's value and where it comes from: "chat", "prompt", "yours" or "default"."""
    layers = [("chat", conversation.parameters or {}), ("prompt", version_parameters(conversation.prompt_version))]
    if conversation.kind == Conversation.Kind.CHAT:  # API requests and evaluations do not depend on who asks
        layers.append(("yours", user_defaults(conversation.owner_id)))
    layers.append(("default", studio_defaults()))
    effect = {}
    for name in [*SAMPLING_FIELDS, "stop"]:
        for source, values in layers:
            if values.get(name) not in (None, []) or source == "default":
                effect[name] = (values.get(name), source)
                break
    return effect


def sampling_summary(effect: dict[str, tuple[object, str]]) -> str:
    """What a reply is written with, short, for the Sampling panel's heading: "T 0.2 · top-p 0.9 ·
    256 tokens", then a seed and stop sequences where set (values from `sampling_in_effect`)."""
    value = {name: shown for name, (shown, _source) in effect.items()}
    parts = [
        f"T {value['temperature']:g}" if value.get("temperature") is not None else "",
        f"top-p {value['top_p']:g}" if value.get("top_p") is not None else "",
        f"{value['max_new_tokens']:,} tokens" if value.get("max_new_tokens") is not None else "",
        f"seed {value['seed']}" if value.get("seed") is not None else "",
    ]
    stop = value.get("stop") or []
    if stop:
        parts.append(f"{len(stop)} stop sequence{'s' if len(stop) > 1 else ''}")
    return " · ".join(part for part in parts if part)


SOURCE_WORDS = {"chat": "this chat", "prompt": "the prompt", "yours": "your default", "default": "studio default"}


def sampling_form_fields(stored: dict, effect: dict | None = None) -> list[dict]:
    """The panel's fields: what this level stores (the input's value) and, where a chat is open,
    the value in effect and where it comes from."""
    labels = {name: label for name, (label, _whole) in SAMPLING_FIELDS.items()} | {
        "stop": f"{STOP_LABEL} (one per line)"
    }
    fields = []
    for name, label in labels.items():
        value = stored.get(name)
        if name == "stop":
            value = "\n".join(value) if isinstance(value, list) else ""
        field = {"name": name, "label": label, "value": "" if value is None else value}
        if effect is not None:
            shown, source = effect[name]
            field["shown"] = ", ".join(map(repr, shown)) if name == "stop" else shown
            field["shown"] = field["shown"] if field["shown"] not in (None, "") else "none"
            field["source"] = SOURCE_WORDS[source]
            field["placeholder"] = "" if source == "chat" else f"{field['shown']} ({SOURCE_WORDS[source]})"
        else:
            field["placeholder"] = "studio default"
        fields.append(field)
    return fields

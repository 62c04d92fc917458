"""Per-chat sampling: what a person sets for one chat or as their own defaults, checked, and
what applies to a reply (the chat's setting, else the prompt version's, else the person's
default, else the studio's)."""

from __future__ import annotations

from django.conf import settings

from studio.input_checks import unstorable_reason

from .models import ChatDefaults, Conversation

# name -> (label, lowest, highest, integer)
SAMPLING_FIELDS = {
    "temperature": ("Temperature", 0.0, 2.0, False),
    "top_p": ("Top-p", 1e-9, 1.0, False),
    "max_new_tokens": ("Maximum tokens", 1, None, True),
    "seed": ("Seed", 0, 2**63 - 1, True),
}
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 100


class SamplingError(ValueError):
    """A setting out of range or malformed; the message names the field, `field` is its name."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def clean_sampling(values) -> dict:
    """Form values (a QueryDict or a dict of text) as stored parameters: blank fields are left out
    (they fall back to what is below them); stop sequences one per line."""
    clean = {}
    for name, (label, lowest, highest, integer) in SAMPLING_FIELDS.items():
        text = str(values.get(name, "") or "").strip()[:40]
        if not text:
            continue
        try:
            number = int(text) if integer else float(text)
        except ValueError:
            raise SamplingError(f"{label} must be {'a whole number' if integer else 'a number'}.", name) from None
        highest = settings.LLM_MAX_NEW_TOKENS_CAP if name == "max_new_tokens" else highest
        if number != number or number < lowest or number > highest:  # NaN fails too
            shown_low = 0 if name == "top_p" else lowest
            shown = (lambda n: f"{n:,}") if integer else (lambda n: f"{n:g}")
            raise SamplingError(f"{label} must be between {shown(shown_low)} and {shown(highest)}"
                                f"{' (above 0)' if name == 'top_p' else ''}.", name)
        clean[name] = number
    stop_text = str(values.get("stop", "") or "")
    if len(stop_text) > MAX_STOP_SEQUENCES * (MAX_STOP_CHARS + 1):
        raise SamplingError(f"Stop sequences: at most {MAX_STOP_SEQUENCES}, each up to {MAX_STOP_CHARS} characters.",
                            "stop")
    stop = [line for line in stop_text.replace("\r\n", "\n").split("\n") if line.strip()]
    if len(stop) > MAX_STOP_SEQUENCES or any(len(line) > MAX_STOP_CHARS for line in stop):
        raise SamplingError(f"Stop sequences: at most {MAX_STOP_SEQUENCES}, each up to {MAX_STOP_CHARS} characters.",
                            "stop")
    if any(unstorable_reason(line) for line in stop):
        raise SamplingError("Stop sequences cannot hold control characters such as NUL.", "stop")
    if stop:
        clean["stop"] = stop
    return clean


def studio_defaults() -> dict:
    return {"temperature": settings.LLM_TEMPERATURE, "top_p": settings.LLM_TOP_P,
            "max_new_tokens": settings.LLM_MAX_NEW_TOKENS, "seed": None, "stop": []}


def user_defaults(user) -> dict:
    defaults = ChatDefaults.objects.filter(owner=user).values_list("parameters", flat=True).first()
    return dict(defaults or {})


def version_parameters(version) -> dict:
    if version is None:
        return {}
    found = {"temperature": version.temperature, "top_p": version.top_p, "max_new_tokens": version.max_new_tokens,
             "stop": list(version.stop or [])}
    return {name: value for name, value in found.items() if value not in (None, [])}


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
    parts = [f"T {value['temperature']:g}" if value.get("temperature") is not None else "",
             f"top-p {value['top_p']:g}" if value.get("top_p") is not None else "",
             f"{value['max_new_tokens']:,} tokens" if value.get("max_new_tokens") is not None else "",
             f"seed {value['seed']}" if value.get("seed") is not None else ""]
    stop = value.get("stop") or []
    if stop:
        parts.append(f"{len(stop)} stop sequence{'s' if len(stop) > 1 else ''}")
    return " · ".join(part for part in parts if part)


SOURCE_WORDS = {"chat": "this chat", "prompt": "the prompt", "yours": "your default", "default": "studio default"}


def sampling_form_fields(stored: dict, effect: dict | None = None) -> list[dict]:
    """The panel's fields: what this level stores (the input's value) and, where a chat is open,
    the value in effect and where it comes from."""
    labels = {name: label for name, (label, *_rest) in SAMPLING_FIELDS.items()} | {"stop": "Stop sequences (one per line)"}
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

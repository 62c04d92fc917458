"""Writes to prompts, their versions and labels; export and import."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from knowledge.models import KnowledgeBase
from knowledge.retrieval import RetrievalError, clean_settings
from studio.errors import StudioError
from studio.input_checks import InputError, parsed_number, unstorable_reason
from studio.llm.constraints import FormatError, OutputFormat, clean_format
from studio.llm.replies import SamplingError, SamplingParameters, sampling_checked
from studio.llm.tools import ToolError, ToolUse, clean_tool_use

from .examples import SHAPE as EXAMPLE_SOURCE_SHAPE
from .examples import ExampleSourceError, clean_example_source
from .models import LABEL_VALIDATOR, LATEST, SLUG_VALIDATOR, LabelMove, Prompt, PromptLabel, PromptVersion
from .rendering import (
    PASSAGES,
    MissingVariablesError,
    TemplateError,
    format_warnings,
    inspect_template,
    render_user_turn,
)

EXPORT_FORMAT = "chat-prompt-studio/prompt"
EXPORT_FORMAT_VERSION = 1
MAX_TEXT_CHARS = 32_000
MAX_EXAMPLES = 200
MAX_IMPORTED_VERSIONS = 1_000
MAX_IMPORTED_LABEL_MOVES = 10_000
MAX_KNOWLEDGE_BASES = 10  # attached to one version


class PromptError(StudioError):
    """A request the library refuses. `field` names what to fix (a form field or JSON path)."""


class PromptPermissionError(PromptError):
    status = 403


def require_editor(prompt: Prompt, user) -> None:
    if not prompt.can_edit(user):
        raise PromptPermissionError(
            f"Only {prompt.owner.get_username()}, the editors they added and staff can change “{prompt.name}”."
        )


# --- validation shared by forms and imports -------------------------------------------------


def clean_version_fields(
    raw: dict,
    where: str = "",
    *,
    user=None,
    carried: dict[int, str] | None = None,
    prompt: Prompt | None = None,
    carried_selections: set[int] = frozenset(),
) -> dict:
    """Checked, typed fields of a version from a form or an import; raises PromptError. `user`: who
    saves it (the knowledge bases it attaches must be visible to them, or `carried`: attached by the
    prompt's versions already, knowledge_bases_carried; the selection its examples come from must be
    theirs, or one of `carried_selections`, selections_carried)."""
    at = lambda name: f"{where}.{name}" if where else name
    text = {}
    for name, required in (("instructions", False), ("template", True), ("commit_message", False)):
        value = raw.get(name, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise PromptError("must be text", at(name))
        _require_storable(value, at(name))
        if len(value) > MAX_TEXT_CHARS:
            raise PromptError(f"is longer than {MAX_TEXT_CHARS:,} characters", at(name))
        if required and not value.strip():
            raise PromptError("must not be empty", at(name))
        text[name] = value
    try:
        variables = inspect_template(text["template"])
    except TemplateError as exc:
        raise PromptError(str(exc), at("template")) from None

    examples, example_source = raw.get("examples", []), {}
    if isinstance(examples, dict):  # examples chosen per input: the k cases most like the input
        try:
            example_source = clean_example_source(
                examples, field=at("examples"), prompt=prompt, user=user, carried_selections=carried_selections
            )
        except ExampleSourceError as exc:
            raise PromptError(exc.message, exc.field) from None
        examples = []
    if not isinstance(examples, list):
        raise PromptError(f"must be a list of {{input, output}} objects, or {EXAMPLE_SOURCE_SHAPE}", at("examples"))
    if len(examples) > MAX_EXAMPLES:
        raise PromptError(f"holds more than {MAX_EXAMPLES} examples", at("examples"))
    clean_examples = [
        _clean_example(example, text["template"], at(f"examples[{n}]")) for n, example in enumerate(examples)
    ]

    model_name = raw.get("model", "") or ""
    if not isinstance(model_name, str) or len(model_name) > 200:
        raise PromptError("must be text of 200 characters at most", at("model"))
    _require_storable(model_name, at("model"))
    sampling = _clean_sampling(raw, at)
    stop = sampling.get("stop", [])
    for n, sequence in enumerate(stop):
        _require_storable(sequence, at(f"stop[{n}]"))
    output_format = clean_output_format(raw.get("output_format"), at("output_format"))
    tools = clean_version_tools(raw, output_format, at)
    retrieval = clean_retrieval(raw.get("retrieval"), variables, user=user, field=at("retrieval"), carried=carried)
    if retrieval.get("layout") == "template":
        variables = [name for name in variables if name != PASSAGES]  # the studio fills it, not the person
    return {
        **text,
        "variables": variables,
        "retrieval": retrieval,
        "examples": clean_examples,
        "example_source": example_source,
        "model_name": model_name.strip(),
        "temperature": sampling.get("temperature"),
        "top_p": sampling.get("top_p"),
        "max_new_tokens": sampling.get("max_new_tokens"),
        "stop": stop,
        "output_format": output_format,
        "tools": tools or {},
    }


def knowledge_bases_carried(prompt: Prompt) -> dict[int, str]:
    """The knowledge bases the prompt's versions attach (id → name as stored): a new version may
    keep them though its editor cannot see them (another person's private base)."""
    carried = {}
    for retrieval in prompt.versions.exclude(retrieval={}).values_list("retrieval", flat=True):
        for entry in (retrieval or {}).get("knowledge_bases") or []:
            if isinstance(entry, dict) and isinstance(entry.get("id"), int):
                carried[entry["id"]] = entry.get("name") or ""
    return carried


def selections_carried(prompt: Prompt) -> set[int]:
    """The case selections the prompt's versions choose examples from: a new version may keep one
    though its editor does not own it (the examples stay what the author chose)."""
    return {
        source["from"]["selection"]
        for source in prompt.versions.exclude(example_source={}).values_list("example_source", flat=True)
        if "selection" in (source or {}).get("from", {})
    }


def clean_retrieval(
    raw, variables: list[str], *, user, field: str = "retrieval", carried: dict[int, str] | None = None
) -> dict:
    """The knowledge a version retrieves from, and how ({} for none). Bases are given by id (a form:
    one the saver may see, or one `carried` from the prompt's versions, which the form names by id
    alone) or as {"id", "name"} (a version edited, an export): kept when the saver may see that base
    under that name, or the prompt's versions carry it; else the name is looked up among the bases
    the saver may see; a name found nowhere is kept with id None (an import from another studio: it
    retrieves nothing until a version names a base here, and says so). Another person's private
    base is answered exactly as one that does not exist: its name cannot be confirmed by guessing."""
    if raw in (None, {}, ""):
        return {}
    if not isinstance(raw, dict):
        raise PromptError("must be an object with knowledge_bases, k, mode, min_score and query", field)
    given = raw.get("knowledge_bases") or []
    if not isinstance(given, list) or len(given) > MAX_KNOWLEDGE_BASES:
        raise PromptError(
            f"must be a list of at most {MAX_KNOWLEDGE_BASES} knowledge bases", f"{field}.knowledge_bases"
        )
    if not given:
        return {}
    visible = (
        KnowledgeBase.objects.filter(Q(shared=True) | Q(owner_id=getattr(user, "pk", None)))
        if user is not None
        else KnowledgeBase.objects.none()
    )
    carried = carried or {}
    bases = []
    for n, item in enumerate(given):
        at = f"{field}.knowledge_bases[{n}]"
        if isinstance(item, dict):
            base_id, name = item.get("id"), item.get("name")
        else:
            base_id, name = item, None
        if base_id is not None and (isinstance(base_id, bool) or not isinstance(base_id, (int, str))):
            raise PromptError("must be a knowledge base's id", at)
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise PromptError("must be a knowledge base's name", at)
        found = None
        if base_id not in (None, ""):
            try:
                base_id = int(base_id)
            except (TypeError, ValueError):
                raise PromptError("must be a knowledge base's id", at) from None
            if carried.get(base_id) is not None and name in (None, carried[base_id]):
                # Attached by the prompt's versions: kept as they hold it, even another person's
                # private base (it gives each person what they may see).
                found = {"id": base_id, "name": carried[base_id]}
            elif name is not None:
                # {"id", "name"}: a differing name is another studio's id, and the name decides.
                found = _base_entry(visible.filter(pk=base_id, name=name).first())
            else:
                found = _base_entry(visible.filter(pk=base_id).first())
        if found is None and name:
            found = _base_entry(visible.filter(name=name).order_by("-shared", "id").first())
        if found is None and not name:
            raise PromptError("there is no such knowledge base, or it is not shared with you", at)
        entry = found if found is not None else {"id": None, "name": name}
        if entry not in bases:
            bases.append(entry)
    try:
        settings = clean_settings(raw, field)
    except RetrievalError as exc:
        raise PromptError(exc.message, exc.field) from None
    query = raw.get("query") or ""
    if not isinstance(query, str) or (query and query not in variables):
        raise PromptError(
            "must name one of the template's variables, or be empty for what the person wrote", f"{field}.query"
        )
    if query == PASSAGES:
        raise PromptError("cannot be the passages themselves", f"{field}.query")
    return {
        "knowledge_bases": bases,
        **settings,
        "query": query,
        "layout": "template" if PASSAGES in variables else "system",
    }


def _base_entry(knowledge_base) -> dict | None:
    return {"id": knowledge_base.pk, "name": knowledge_base.name} if knowledge_base is not None else None


def clean_output_format(raw, field: str = "output_format") -> OutputFormat:
    """The version's output format, checked and compiled as a worker will compile it (refused here,
    with the reason, never at decoding time)."""
    try:
        cleaned = clean_format(raw)
        format_warnings(cleaned)
    except FormatError as exc:
        raise PromptError(str(exc), field, code=exc.code) from None
    return cleaned


def clean_version_tools(raw: dict, output_format: OutputFormat, at=lambda name: name) -> ToolUse | None:
    """A version's tools from OpenAI's fields (`tools`, `tool_choice`, `parallel_tool_calls`), as the
    API checks a request's (tools.clean_tool_use, then each tool's parameters compiled as an output
    format's schema is: tools_can_be_enforced); None for none. Raises PromptError naming the field."""
    tools = raw.get("tools")
    if isinstance(tools, str):  # the version form's JSON, as typed
        try:
            tools = json.loads(tools) if tools.strip() else None
        except ValueError as exc:
            raise PromptError(f"is not valid JSON ({exc})", at("tools")) from None
    try:
        tool_use = clean_tool_use(tools, raw.get("tool_choice"), raw.get("parallel_tool_calls"))
        tools_can_be_enforced(tool_use, output_format)
    except ToolError as exc:
        field, _, reason = str(exc).partition(": ")
        field = field.strip("`")
        if not field.startswith("tools[") or not reason:  # about the whole field: `tools`, `tool_choice`
            field, reason = exc.param, str(exc)
        raise PromptError(reason, at(field), code=getattr(exc, "code", "")) from None
    return tool_use


def tools_can_be_enforced(
    tool_use: ToolUse | None, output_format: OutputFormat | None, *, schemas: bool = True
) -> None:
    """Each tool's parameters compile as an output format's schema does (in the sandbox, as a worker
    will compile them), and the calls can be held beside `output_format` (with "auto", only a JSON
    format combines). Raises ToolError naming OpenAI's field. The one check a version's tools and an
    API request's both pass."""
    if not tool_use:
        return
    for n, tool in enumerate(tool_use["tools"]):
        try:
            format_warnings({"type": "json_schema", "schema": tool["parameters"]})
        except FormatError as exc:
            reason = str(exc).removeprefix("schema: ")
            error = ToolError(f"`tools[{n}].function.parameters`: {reason}", "tools")
            error.code = exc.code
            raise error from None
    if tool_use["choice"] == "auto" and output_format and output_format.get("type") in ("regex", "choice"):
        raise ToolError(
            f"A reply that may call tools can take a JSON output format, not a {output_format['type']}; "
            'set `tool_choice` to "required" or "none", or change the output format.',
            "tool_choice",
        )


def _clean_example(example, template: str, where: str) -> dict:
    """A few-shot example: {"input", "output"} as written, or {"variables", "output"} whose input
    is the template rendered with those values when the version is saved (so the examples look
    to the model exactly as the live input does). Stored with both: `input` is what is sent."""
    if not isinstance(example, dict) or set(example) - {"input", "output", "variables"}:
        raise PromptError("must be an object with input (or variables) and output", where)
    variables = example.get("variables")
    if variables is not None:
        if (
            not isinstance(variables, dict)
            or not variables
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in variables.items())
        ):
            raise PromptError("must map the template's variables to text values", f"{where}.variables")
        for name, value in variables.items():
            _require_storable(value, f"{where}.variables.{name}")
        try:
            rendered = render_user_turn(template, {PASSAGES: [], **variables})  # an example's passages: none
        except (MissingVariablesError, TemplateError) as exc:
            raise PromptError(str(exc), f"{where}.variables") from None
        example = {**example, "input": rendered}
    for key in ("input", "output"):
        value = example.get(key)
        if not isinstance(value, str) or not value.strip():
            raise PromptError("must be non-empty text", f"{where}.{key}")
        _require_storable(value, f"{where}.{key}")
    clean = {"input": example["input"], "output": example["output"]}
    if variables is not None:
        clean["variables"] = dict(variables)
    return clean


def _require_storable(text: str, field: str) -> None:
    reason = unstorable_reason(text)
    if reason:
        raise PromptError(reason, field)


def _clean_sampling(raw: dict, at) -> SamplingParameters:
    """A version's sampling (a form's text or an import's JSON), checked by the rule every reply's
    is (studio.llm.replies.sampling_checked); blank ones are left out (the studio's default applies)."""
    typed = {}
    for name, whole in (("temperature", False), ("top_p", False), ("max_new_tokens", True)):
        value = raw.get(name)
        if value is None or value == "":
            continue
        try:
            number = parsed_number(value, whole=whole)
        except InputError as exc:
            raise PromptError(str(exc), at(name), code=SamplingError.code) from None
        typed[name] = number if whole else float(number)
    stop = raw.get("stop", []) or []
    if not isinstance(stop, list):
        raise PromptError("must be a list of non-empty texts", at("stop"), code=SamplingError.code)
    typed["stop"] = stop
    try:
        return sampling_checked(typed, max_new_tokens_cap=settings.LLM_MAX_NEW_TOKENS_CAP)
    except SamplingError as exc:
        raise PromptError(exc.requirement, at(exc.field), code=exc.code) from None


def _clean_identity(raw: dict, where: str = "") -> dict:
    at = lambda name: f"{where}.{name}" if where else name
    name, slug, description = raw.get("name"), raw.get("slug"), raw.get("description", "") or ""
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise PromptError("must be text of 1 to 200 characters", at("name"))
    _require_storable(name, at("name"))
    if not isinstance(slug, str) or not slug or len(slug) > 100:
        raise PromptError("must be text of 1 to 100 characters", at("slug"))
    try:
        SLUG_VALIDATOR(slug)
    except ValidationError as exc:
        raise PromptError(exc.messages[0], at("slug")) from None
    if not isinstance(description, str) or len(description) > MAX_TEXT_CHARS:
        raise PromptError("must be text", at("description"))
    _require_storable(description, at("description"))
    return {"name": name.strip(), "slug": slug, "description": description}


def _clean_label(name, field: str = "label") -> str:
    if not isinstance(name, str):
        raise PromptError("must be text", field)
    name = name.strip().lower()
    try:
        LABEL_VALIDATOR(name)
    except ValidationError as exc:
        raise PromptError(exc.messages[0], field) from None
    if name == LATEST:
        raise PromptError("“latest” always means the newest version; it cannot be moved", field)
    return name


def _version_number(value, count: int, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= count:
        raise PromptError(f"must be a version number from 1 to {count}", field)
    return value


# --- writes -----------------------------------------------------------------------------------


def prompt_create(*, owner, name: str, slug: str, description: str = "", version: dict) -> Prompt:
    identity = _clean_identity({"name": name, "slug": slug, "description": description})
    fields = clean_version_fields(version, user=owner)
    with transaction.atomic():
        if Prompt.objects.filter(slug=identity["slug"]).exists():
            raise PromptError(f"a prompt with the slug “{identity['slug']}” already exists", "slug")
        prompt = Prompt.objects.create(owner=owner, **identity)
        PromptVersion.objects.create(prompt=prompt, number=1, author=owner, created_at=timezone.now(), **fields)
    return prompt


def version_create(*, prompt: Prompt, author, fields: dict) -> PromptVersion:
    """Version N+1 of `prompt`. Versions never change; this is how a prompt is edited."""
    require_editor(prompt, author)
    clean = clean_version_fields(
        fields,
        user=author,
        carried=knowledge_bases_carried(prompt),
        prompt=prompt,
        carried_selections=selections_carried(prompt),
    )
    with transaction.atomic():
        # Two editors saving at once would both pick N+1: lock the prompt row.
        Prompt.objects.select_for_update().get(pk=prompt.pk)
        latest = prompt.versions.order_by("-number").first()
        number = (latest.number if latest else 0) + 1
        return PromptVersion.objects.create(
            prompt=prompt, number=number, author=author, created_at=timezone.now(), **clean
        )


def label_move(*, prompt: Prompt, name: str, version: PromptVersion, user) -> PromptLabel:
    require_editor(prompt, user)
    name = _clean_label(name)
    if version.prompt_id != prompt.pk:
        raise PromptError("that version belongs to another prompt", "version")
    with transaction.atomic():
        label = PromptLabel.objects.select_for_update().filter(prompt=prompt, name=name).first()
        from_number = label.version.number if label else None
        if label is None:
            label = PromptLabel.objects.create(prompt=prompt, name=name, version=version)
        elif label.version_id != version.pk:
            label.version = version
            label.save(update_fields=["version", "updated_at"])
        else:
            return label  # already there: nothing moved, nothing to audit
        LabelMove.objects.create(
            prompt=prompt,
            label=name,
            from_number=from_number,
            to_number=version.number,
            moved_by=user,
            moved_at=timezone.now(),
        )
    return label


def editor_add(*, prompt: Prompt, username: str, user) -> None:
    require_editor(prompt, user)
    _require_storable(username, "username")
    editor = get_user_model().objects.filter(username=username.strip()).first()
    if editor is None:
        raise PromptError(f"there is no user named “{username.strip()}”", "username")
    prompt.editors.add(editor)


def editor_remove(*, prompt: Prompt, editor_id: int, user) -> None:
    require_editor(prompt, user)
    prompt.editors.remove(editor_id)


# --- export and import ----------------------------------------------------------------------


def prompt_export(prompt: Prompt) -> dict:
    versions = prompt.versions.select_related("author").order_by("number")
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "prompt": {"name": prompt.name, "slug": prompt.slug, "description": prompt.description},
        "versions": [
            {
                "number": v.number,
                **v.editable_fields(),
                "author": v.author.get_username(),
                "created_at": v.created_at.isoformat(),
                **({"provenance": v.provenance} if v.provenance else {}),
            }
            for v in versions
        ],
        "labels": {label.name: label.version.number for label in prompt.labels.select_related("version")},
        "label_history": [
            {
                "label": move.label,
                "from": move.from_number,
                "to": move.to_number,
                "moved_by": move.moved_by.get_username(),
                "moved_at": move.moved_at.isoformat(),
                **({"provenance": move.provenance} if move.provenance else {}),
            }
            for move in prompt.label_moves.select_related("moved_by").order_by("moved_at", "id")
        ],
    }


def prompt_import(*, data, owner) -> Prompt:
    """Create a prompt from an export. Checks everything first; refuses and writes nothing on error.

    Everything created is the importer's, made now: a file can claim anything, so the authors,
    label movers and times it names are kept as text on each row ("imported; originally by
    alice, 2020-01-02 10:00 UTC"), never bound to an account.
    """
    if not isinstance(data, dict):
        raise PromptError("the file must hold a JSON object", "(file)")
    if data.get("format") != EXPORT_FORMAT:
        raise PromptError(f"must be “{EXPORT_FORMAT}”: this is not a prompt export", "format")
    if data.get("format_version") != EXPORT_FORMAT_VERSION:
        raise PromptError(f"must be {EXPORT_FORMAT_VERSION}", "format_version")
    if not isinstance(data.get("prompt"), dict):
        raise PromptError("must be an object with name, slug and description", "prompt")
    identity = _clean_identity(data["prompt"], "prompt")
    versions = data.get("versions")
    if not isinstance(versions, list) or not versions:
        raise PromptError("must be a non-empty list", "versions")
    if len(versions) > MAX_IMPORTED_VERSIONS:
        raise PromptError(
            f"holds {len(versions):,} versions; an import holds at most {MAX_IMPORTED_VERSIONS:,}", "versions"
        )
    clean_versions = []
    for n, raw in enumerate(versions):
        where = f"versions[{n}]"
        if not isinstance(raw, dict):
            raise PromptError("must be an object", where)
        if raw.get("number") != n + 1:
            raise PromptError(f"must be {n + 1}: versions are numbered 1, 2, 3... in order", f"{where}.number")
        fields = clean_version_fields(raw, where, user=owner)
        fields["provenance"] = _provenance(
            "originally by",
            _username(raw.get("author"), f"{where}.author"),
            _datetime(raw.get("created_at"), f"{where}.created_at"),
        )
        clean_versions.append(fields)
    labels = data.get("labels", {})
    if not isinstance(labels, dict):
        raise PromptError("must be an object of label: version number", "labels")
    clean_labels = {}
    for name, number in labels.items():
        clean_name = _clean_label(name, f"labels.{name}")
        if clean_name in clean_labels:
            raise PromptError(f"names the label “{clean_name}” twice", f"labels.{name}")
        clean_labels[clean_name] = _version_number(number, len(clean_versions), f"labels.{name}")
    history = data.get("label_history", [])
    if not isinstance(history, list):
        raise PromptError("must be a list", "label_history")
    if len(history) > MAX_IMPORTED_LABEL_MOVES:
        raise PromptError(f"holds more than {MAX_IMPORTED_LABEL_MOVES:,} moves", "label_history")
    clean_history = []
    for n, move in enumerate(history):
        where = f"label_history[{n}]"
        if not isinstance(move, dict):
            raise PromptError("must be an object with label, from, to, moved_by, moved_at", where)
        from_number = move.get("from")
        clean_history.append(
            {
                "label": _clean_label(move.get("label"), f"{where}.label"),
                "from_number": None
                if from_number is None
                else _version_number(from_number, len(clean_versions), f"{where}.from"),
                "to_number": _version_number(move.get("to"), len(clean_versions), f"{where}.to"),
                "provenance": _provenance(
                    "originally moved by",
                    _username(move.get("moved_by"), f"{where}.moved_by"),
                    _datetime(move.get("moved_at"), f"{where}.moved_at"),
                ),
            }
        )

    now = timezone.now()
    with transaction.atomic():
        if Prompt.objects.filter(slug=identity["slug"]).exists():
            raise PromptError(
                f"a prompt with the slug “{identity['slug']}” already exists here; "
                "rename the slug in the file or delete the existing prompt",
                "prompt.slug",
            )
        prompt = Prompt.objects.create(owner=owner, **identity)
        created = {}
        for number, fields in enumerate(clean_versions, start=1):
            created[number] = PromptVersion.objects.create(
                prompt=prompt, number=number, author=owner, created_at=now, **fields
            )
        for name, number in clean_labels.items():
            PromptLabel.objects.create(prompt=prompt, name=name, version=created[number])
        LabelMove.objects.bulk_create(
            [LabelMove(prompt=prompt, moved_by=owner, moved_at=now, **move) for move in clean_history]
        )
    return prompt


def _provenance(claim: str, username: str, when: datetime) -> str:
    return f"imported; {claim} {username}, {when.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _datetime(value, field) -> datetime:
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is None:
        raise PromptError("must be an ISO 8601 date and time", field)
    return parsed if parsed.tzinfo else timezone.make_aware(parsed)


def _username(value, field) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 150:
        raise PromptError("must be a user name (150 characters at most)", field)
    _require_storable(value, field)
    return " ".join(value.split())

import json
import re

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from knowledge.retrieval import DEFAULT_SETTINGS
from knowledge.search import MODES
from knowledge.selectors import attached_bases_seen_by, knowledge_bases_for
from studio.input_checks import InputError, parse_json, whole_number_or_none
from studio.llm.constraints import MAX_PATTERN_COST, sample_of

from . import selectors, services, splits
from .diff import diff_versions, format_text, retrieval_text, tool_choice_text
from .examples import DEFAULT_K, HELD_OUT_NOTE, MAX_K, pool_size, selection_choices, source_text
from .rendering import TemplateError, inspect_template

MAX_IMPORT_BYTES = 5 * 1024 * 1024


def prompt_or_404(slug):
    prompt = selectors.prompt_by_slug(slug)
    if prompt is None:
        raise Http404(f"There is no prompt “{slug}”.")
    return prompt


def version_or_404(prompt, number=None, label=None):
    try:
        return selectors.version_resolve(prompt, number=number, label=label)
    except selectors.VersionNotFound as exc:
        raise Http404(str(exc)) from None


def _version_fields_from_form(post) -> dict:
    """The version form's fields as `services.clean_version_fields` takes them."""
    examples = []
    variables = [name for name in post.get("example_variable", "").split(",") if name]
    if variables:  # the form offered a variable: only while the template sent still has exactly that one
        try:
            if inspect_template(post.get("template", "")) != variables:
                variables = []
        except TemplateError:
            variables = []
    modes = post.getlist("example_mode")
    for n, (given_input, given_output) in enumerate(zip(post.getlist("example_input"), post.getlist("example_output"))):
        if not (given_input.strip() or given_output.strip()):
            continue
        if n < len(modes) and modes[n] == "template" and len(variables) == 1:
            # The input box holds the template's one variable: it goes through the template on save.
            examples.append({"variables": {variables[0]: given_input}, "output": given_output})
        else:
            examples.append({"input": given_input, "output": given_output})
    if post.get("example_choice") == "nearest":  # chosen per input: the source replaces the list
        origin, _, value = post.get("example_from", "split:train").partition(":")
        examples = {
            "from": {origin if origin in ("split", "selection") else "split": value or "train"},
            "k": post.get("example_k", ""),
            "balance": post.get("example_balance", ""),
        }
    return {
        "output_format": output_format_from_form(post.get("output_type", "text"), post.get("output_spec", "")),
        "instructions": post.get("instructions", ""),
        "template": post.get("template", ""),
        "examples": examples,
        "model": post.get("model", ""),
        "temperature": post.get("temperature", ""),
        "top_p": post.get("top_p", ""),
        "max_new_tokens": post.get("max_new_tokens", ""),
        "stop": [line for line in post.get("stop", "").splitlines() if line],
        "retrieval": _retrieval_from_form(post),
        **tool_fields_from_form(post),
        "commit_message": post.get("commit_message", ""),
    }


def tool_fields_from_form(post) -> dict:
    """The Tools fieldset as OpenAI's fields: the tools' JSON as typed (parsed and checked when the
    version is cleaned), the choice ("auto", "required", "none" or a tool's name), parallel calls."""
    typed_choice = post.get("tool_choice", "").strip()
    if typed_choice in ("", "auto", "none", "required"):
        tool_choice = typed_choice or None
    else:
        tool_choice = {"type": "function", "function": {"name": typed_choice}}
    return {
        "tools": post.get("tools", ""),
        "tool_choice": tool_choice,
        "parallel_tool_calls": post.get("parallel_tool_calls") == "on",
    }


def tool_form_values(fields: dict) -> dict:
    """The Tools fieldset refilled: the tools as pretty JSON (or the text typed, when refused)."""
    tools = fields.get("tools")
    if isinstance(tools, str):
        tools_text = tools
    else:
        tools_text = json.dumps(tools, indent=2, ensure_ascii=False) if tools else ""
    choice = fields.get("tool_choice")
    if isinstance(choice, dict):
        choice = (choice.get("function") or {}).get("name", "")
    return {
        "tools_text": tools_text,
        "tool_choice_text": choice if isinstance(choice, str) else "",
        "parallel_checked": fields.get("parallel_tool_calls") is not False,
    }


def _retrieval_from_form(post) -> dict:
    """The Knowledge fieldset: the bases ticked (ids), those carried from the version edited
    ({"id", "name"}, which the editor may not see), k, mode, minimum score and the query variable."""
    carried = []
    for entry in post.getlist("knowledge_base_kept"):
        try:
            item = json.loads(entry)
        except ValueError:
            continue
        if isinstance(item, dict):
            carried.append(item)
    return {
        "knowledge_bases": [*post.getlist("knowledge_base"), *carried],
        "k": post.get("retrieval_k", ""),
        "mode": post.get("retrieval_mode", ""),
        "min_score": post.get("retrieval_min_score", ""),
        "query": post.get("retrieval_query", ""),
    }


OUTPUT_TYPES = [
    ("text", "free text"),
    ("json", "any JSON object"),
    ("json_schema", "JSON matching a schema"),
    ("regex", "text matching a regular expression"),
    ("choice", "one of a list of choices"),
]


def output_format_from_form(kind: str, spec: str) -> dict | str:
    """The form's two fields as an output format (what is wrong with it is said when it is cleaned)."""
    if kind == "json_schema":
        return {"type": kind, "schema": spec}  # parsed and checked when the version is cleaned
    if kind == "regex":
        return {"type": kind, "pattern": spec.strip()}
    if kind == "choice":
        return {"type": kind, "choices": [line.strip() for line in spec.splitlines() if line.strip()]}
    return {"type": kind}


def output_format_form_values(output_format) -> dict:
    output_format = output_format if isinstance(output_format, dict) else {}
    kind = output_format.get("type", "text")
    if kind == "json_schema":
        schema = output_format.get("schema")
        spec = json.dumps(schema, indent=2, ensure_ascii=False) if isinstance(schema, dict) else str(schema or "")
    else:
        spec = output_format.get("pattern") or "\n".join(output_format.get("choices") or [])
    return {"output_type": kind, "output_spec": spec, "max_pattern_cost": f"{MAX_PATTERN_COST:,}"}


def version_form_values(fields: dict, variables: list[str] | None = None, *, user=None) -> dict:
    """Values to refill the form with (after an error, or from the version edited). An example
    kept as variables shows its variable's value in the input box, in "through the template" mode."""
    if variables is None:
        try:
            variables = inspect_template(fields["template"]) if (fields.get("template") or "").strip() else []
        except TemplateError:
            variables = []
    examples, source = [], fields.get("examples") if isinstance(fields.get("examples"), dict) else {}
    for example in (list(fields.get("examples") or []) if not source else []) + [{"input": "", "output": ""}]:
        values = example.get("variables") or {}
        if len(values) == 1:
            examples.append({"input": next(iter(values.values())), "output": example["output"], "mode": "template"})
        else:
            examples.append(
                {
                    "input": example.get("input", ""),
                    "output": example["output"],
                    "mode": "template" if not example.get("input") else "written",
                }
            )
    return {
        **fields,
        **output_format_form_values(fields.get("output_format")),
        "output_types": OUTPUT_TYPES,
        **_retrieval_form_values(fields.get("retrieval"), user, variables),
        "stop_text": "\n".join(fields.get("stop") or []),
        **tool_form_values(fields),
        "examples": examples,
        **_example_source_form_values(source, user),
        "example_variable": variables[0] if len(variables) == 1 else "",
        "variable_count": len(variables),
    }


def _example_source_form_values(source: dict, user) -> dict:
    """The "chosen per input" part of the examples fieldset: where from (the train split or one of
    the person's selections), k and balance."""
    origin = source.get("from") or {}
    chosen = f"selection:{origin['selection']}" if origin.get("selection") else "split:train"
    return {
        "example_choice": "nearest" if source else "fixed",
        "example_from": chosen,
        "example_from_choices": [
            ("split:train", "the prompt's train split"),
            *((f"selection:{pk}", f"your selection “{name}”") for pk, name in selection_choices(user=user)),
        ],
        "example_k": source.get("k") or DEFAULT_K,
        "example_balance": source.get("balance") or "",
        "example_max_k": MAX_K,
        "example_held_out_note": HELD_OUT_NOTE,
    }


def _retrieval_form_values(retrieval, user, variables: list[str]) -> dict:
    """The Knowledge fieldset's values: every base the editor may see (ticked when attached), the
    attached ones they may not see (kept as they are), the settings, the variables to query with."""
    retrieval = retrieval if isinstance(retrieval, dict) else {}
    attached = [kb for kb in retrieval.get("knowledge_bases") or [] if isinstance(kb, dict)]
    attached_ids = {str(kb.get("id")) for kb in attached} | {
        str(kb) for kb in retrieval.get("knowledge_bases") or [] if not isinstance(kb, dict)
    }
    choices = list(knowledge_bases_for(user=user)) if user is not None else []
    shown = {str(kb.pk) for kb in choices}
    # A base the editor cannot see is kept by its id alone (its name stays off the page; the save
    # takes it from the prompt's versions, services.knowledge_bases_carried).
    kept = [kb for kb in attached_bases_seen_by(user=user, attached=attached) if str(kb["id"]) not in shown]
    return {
        "knowledge_choices": [
            {"id": kb.pk, "name": kb.name, "shared": kb.shared, "checked": str(kb.pk) in attached_ids} for kb in choices
        ],
        "knowledge_kept": [
            {
                "entry": json.dumps({"id": kb["id"]} if kb["hidden"] else {"id": kb["id"], "name": kb["name"]}),
                "name": kb["name"],
                "here": kb["id"] is not None,
            }
            for kb in kept
        ],
        "retrieval_k": retrieval.get("k") or DEFAULT_SETTINGS["k"],
        "retrieval_mode": retrieval.get("mode") or "hybrid",
        "retrieval_min_score": "" if retrieval.get("min_score") in (None, "") else retrieval.get("min_score"),
        "retrieval_query": retrieval.get("query") or "",
        "retrieval_modes": MODES,
        "query_variables": [name for name in variables if name != "passages"],
    }


def _retrieval_seen_by(retrieval, user) -> dict:
    """A version's retrieval as `user` may read it: bases they cannot see unnamed."""
    if not retrieval:
        return retrieval
    return {
        **retrieval,
        "knowledge_bases": attached_bases_seen_by(user=user, attached=retrieval.get("knowledge_bases")),
    }


def _retrieval_shown(version, user) -> dict:
    """The version page's Knowledge section, and what of it this person gets nothing from."""
    seen = _retrieval_seen_by(version.retrieval, user)
    return {
        "retrieval_text": retrieval_text(seen),
        "retrieval_unavailable": [
            kb["name"] for kb in (seen or {}).get("knowledge_bases", []) if kb["hidden"] or kb["id"] is None
        ],
    }


def _example_source_shown(version, user) -> dict:
    """The version page's words for examples chosen per input, and how many cases this person's
    replies choose from now (fewer than k: all of them are used)."""
    if not version.example_source:
        return {}
    pool = pool_size(version, user=user)
    return {
        "example_source_text": source_text(version.example_source),
        "example_pool_size": pool,
        "example_pool_short": pool is not None and pool < version.example_source["k"],
        "example_held_out_note": HELD_OUT_NOTE if "selection" in version.example_source["from"] else "",
    }


def _output_format_shown(version) -> dict:
    output_format = version.answer_format
    sample = ""
    if output_format["type"] == "json_schema":
        sample = json.dumps(sample_of(output_format["schema"]), indent=2, ensure_ascii=False)
    elif output_format["type"] == "choice":
        sample = output_format["choices"][0]
    return {"output_format_text": format_text(output_format), "output_sample": sample}


def _tools_shown(version) -> dict:
    """The version page's Tools section: each tool with its parameters as pretty JSON, and the choice."""
    tool_use = version.tool_use
    if not tool_use:
        return {"tools_shown": [], "tool_choice_shown": ""}
    return {
        "tools_shown": [
            {**tool, "parameters_json": json.dumps(tool["parameters"], indent=2, ensure_ascii=False)}
            for tool in tool_use["tools"]
        ],
        "tool_choice_shown": tool_choice_text(tool_use),
    }


def _sampling_shown(version) -> dict:
    """What the version's replies use where it was saved before the sampling rule with more than
    its ranges allow (PromptVersion.reply_sampling), in one sentence; "" for every other version."""
    moved, used = version.sampling_saved_out_of_range, version.reply_sampling
    changes = {
        "temperature": lambda: f"temperature {used['temperature']:g} (saved {version.temperature:g})",
        "max_new_tokens": lambda: f"{used['max_new_tokens']:,} max new tokens (saved {version.max_new_tokens:,})",
        "stop": lambda: f"{len(used.get('stop', []))} of its {len(version.stop)} stop sequences",
    }
    if not moved:
        return {"sampling_note": ""}
    used_now = ", ".join(changes[name]() for name in moved)
    return {
        "sampling_note": f"Saved before the current sampling ranges: replies use {used_now}. "
        "Save a new version to choose."
    }


def _split_context(prompt, *, rows=None, error=None, note="") -> dict:
    """The A/B split card: the running split with each variant's version now, and the form's rows
    (the running split's variants, then blank ones; what was typed when it was refused)."""
    split = splits.active_split(prompt)
    versions = splits.variant_versions(prompt, split) if split else {}
    if rows is None:
        rows = [{"label": v["label"], "weight": f"{v['weight']:g}"} for v in (split.variants if split else [])]
    blank = max(3, len(rows) + 1) - len(rows)
    rows = rows + [{"label": "", "weight": ""}] * min(blank, splits.MAX_VARIANTS - len(rows))
    error_row, error_part = _split_error_place(error)
    return {
        "split": split,
        "split_variants": [{**v, "version": versions.get(v["label"])} for v in (split.variants if split else [])],
        "split_rows": [
            {**row, "error": error if n == error_row else None, "error_part": error_part if n == error_row else ""}
            for n, row in enumerate(rows)
        ],
        "split_error": error if error is not None and error_row is None else None,
        "split_labels": prompt.labels.select_related("version"),
        "split_note": note,
        "split_monitoring_url": _monitoring_url(prompt),
    }


def _monitoring_url(prompt) -> str:
    """The prompt's monitoring page, where the variants are compared ("" in a studio without it)."""
    try:
        return reverse("monitoring:prompt", args=[prompt.slug])
    except NoReverseMatch:
        return ""


def _split_error_place(error) -> tuple[int | None, str]:
    """(form row, "label" or "weight") of a refusal naming `variants[n].label`; (None, "") for the
    whole form. The form's rows are numbered as the variants it sent (blank rows are left out last)."""
    found = re.fullmatch(r"variants\[(\d+)\](?:\.(label|weight))?", getattr(error, "field", "") or "")
    return (int(found[1]), found[2] or "") if found else (None, "")


def _split_rows_from_form(post) -> list[dict]:
    """The form's rows with a label or a weight, as typed (kept to show again when refused)."""
    rows = zip(post.getlist("label"), post.getlist("weight"), strict=False)
    return [
        {"label": label.strip(), "weight": weight.strip()}
        for label, weight in list(rows)[: splits.MAX_VARIANTS + 1]
        if label.strip() or weight.strip()
    ]


def _weight_typed(text: str):
    """A weight as typed: 0.9, or 90 % (a share of the requests); text that is neither goes to the
    service as it is, which refuses it at its row."""
    percent = text.endswith("%")
    try:
        number = float(text.removesuffix("%").strip())
    except ValueError:
        return text
    return number / 100 if percent else number


def _labels_context(prompt) -> dict:
    return {
        "labels": prompt.labels.select_related("version"),
        "label_moves": selectors.label_moves_page(prompt),
        **selectors.version_summary(prompt),
    }


# --- library --------------------------------------------------------------------------------


@login_required
@require_GET
def prompt_list(request):
    return render(request, "prompts/prompt_list.html", {"prompts": selectors.prompts_page(request.GET.get("page"))})


@login_required
@require_http_methods(["GET", "POST"])
def prompt_new(request):
    identity = {"name": "", "slug": "", "description": ""}
    fields = {"template": "{{ input }}"}
    error = None
    if request.method == "POST":
        identity = {
            "name": request.POST.get("name", ""),
            "description": request.POST.get("description", ""),
            "slug": request.POST.get("slug", "").strip() or slugify(request.POST.get("name", "")),
        }
        fields = _version_fields_from_form(request.POST)
        fields["commit_message"] = fields["commit_message"] or "First version"
        try:
            prompt = services.prompt_create(owner=request.user, version=fields, **identity)
        except services.PromptError as exc:
            error = exc
        else:
            return redirect(prompt)
    return render(
        request,
        "prompts/prompt_new.html",
        {"identity": identity, "form": version_form_values(fields, user=request.user), "error": error},
        status=400 if error else 200,
    )


@login_required
@require_GET
def prompt_detail(request, slug, number=None):
    prompt = prompt_or_404(slug)
    version = version_or_404(prompt, number=number)
    return render(
        request,
        "prompts/prompt_detail.html",
        {
            **_labels_context(prompt),
            **_split_context(prompt),
            "prompt": prompt,
            "version": version,
            "history": selectors.versions_page(prompt),
            "can_edit": prompt.can_edit(request.user),
            "editors": prompt.editors.all(),
            **_output_format_shown(version),
            **_retrieval_shown(version, request.user),
            **_sampling_shown(version),
            **_tools_shown(version),
            **_example_source_shown(version, request.user),
            "previous_number": version.number - 1 if version.number > 1 else None,
        },
    )


@login_required
@require_GET
def version_history(request, slug):
    """Older versions for the history column ("Older versions…")."""
    prompt = prompt_or_404(slug)
    return render(
        request,
        "prompts/_history_items.html",
        {
            "prompt": prompt,
            "history": selectors.versions_page(prompt, request.GET.get("page")),
            "version": {"number": whole_number_or_none(request.GET.get("shown"))},
        },
    )


@login_required
@require_GET
def label_history(request, slug):
    """Older label moves ("Older moves…")."""
    prompt = prompt_or_404(slug)
    return render(
        request,
        "prompts/_label_moves.html",
        {"prompt": prompt, "label_moves": selectors.label_moves_page(prompt, request.GET.get("page"))},
    )


@login_required
@require_http_methods(["GET", "POST"])
def version_new(request, slug):
    prompt = prompt_or_404(slug)
    if not prompt.can_edit(request.user):
        raise PermissionDenied("Only the prompt's owner, its editors and staff can make new versions.")
    base = version_or_404(prompt, number=request.GET.get("from") or request.POST.get("from"))
    fields, error = {**base.editable_fields(), "commit_message": ""}, None
    if request.method == "POST":
        fields = _version_fields_from_form(request.POST)
        try:
            version = services.version_create(prompt=prompt, author=request.user, fields=fields)
        except services.PromptError as exc:
            error = exc
        else:
            return redirect(version)
    return render(
        request,
        "prompts/version_new.html",
        {"prompt": prompt, "base": base, "form": version_form_values(fields, user=request.user), "error": error},
        status=400 if error else 200,
    )


@login_required
@require_GET
def version_diff(request, slug):
    prompt = prompt_or_404(slug)
    new = version_or_404(prompt, number=request.GET.get("to") or None)
    old = version_or_404(prompt, number=request.GET.get("from") or max(new.number - 1, 1))
    for version in (old, new):  # read, never saved: bases this person cannot see are unnamed
        version.retrieval = _retrieval_seen_by(version.retrieval, request.user)
    sections = diff_versions(old, new)
    return render(
        request,
        "prompts/version_diff.html",
        {
            "prompt": prompt,
            "old": old,
            "new": new,
            "sections": sections,
            **selectors.version_summary(prompt),
            "identical": not any(section.changed for section in sections),
        },
    )


@login_required
@require_POST
def label_move(request, slug):
    prompt = prompt_or_404(slug)
    if not prompt.can_edit(request.user):
        raise PermissionDenied("Only the prompt's owner, its editors and staff can move labels.")
    shown = version_or_404(prompt, number=request.POST.get("shown") or None)  # the version the page shows
    label_name = request.POST.get("label", "")
    try:
        version = version_or_404(prompt, number=request.POST.get("version"))
        services.label_move(prompt=prompt, name=label_name, version=version, user=request.user)
    except (services.PromptError, Http404) as exc:
        # Keep what was typed, so the person can correct it.
        return render(
            request,
            "prompts/_labels.html",
            {
                **_labels_context(prompt),
                "prompt": prompt,
                "version": shown,
                "can_edit": True,
                "error": exc,
                "label_value": label_name,
                "label_version": whole_number_or_none(request.POST.get("version")),
            },
        )
    # The history column shows labels too: it is swapped out of band with the labels card.
    return render(
        request,
        "prompts/_labels.html",
        {
            **_labels_context(prompt),
            "prompt": prompt,
            "version": shown,
            "can_edit": True,
            "moved": True,
            "history": selectors.versions_page(prompt),
        },
    )


@login_required
@require_POST
def editors_change(request, slug):
    prompt = prompt_or_404(slug)
    if not prompt.can_edit(request.user):
        raise PermissionDenied("Only the prompt's owner, its editors and staff can change who edits it.")
    error = None
    try:
        if request.POST.get("remove"):
            editor_id = whole_number_or_none(request.POST["remove"])
            if editor_id is not None:
                services.editor_remove(prompt=prompt, editor_id=editor_id, user=request.user)
        else:
            services.editor_add(prompt=prompt, username=request.POST.get("username", ""), user=request.user)
    except services.PromptError as exc:
        error = exc
    return render(
        request,
        "prompts/_editors.html",
        {"prompt": prompt, "editors": prompt.editors.all(), "can_edit": True, "error": error},
    )


@login_required
@require_POST
def split_change(request, slug):
    """Start (or change) the prompt's A/B split from its page, or end it (`end`)."""
    prompt = prompt_or_404(slug)
    if not prompt.can_edit(request.user):
        raise PermissionDenied("Only the prompt's owner, its editors and staff can split its traffic.")
    rows, error, note = None, None, ""
    try:
        if request.POST.get("end"):
            splits.split_end(prompt=prompt, user=request.user)
            note = f"The split ended: prompt:{prompt.slug} serves its production label again."
        else:
            rows = _split_rows_from_form(request.POST)
            variants = [{"label": row["label"], "weight": _weight_typed(row["weight"])} for row in rows]
            splits.split_set(prompt=prompt, variants=variants, user=request.user)
            rows, note = None, "The split is running."
    except services.PromptError as exc:
        error = exc
    return render(
        request,
        "prompts/_split.html",
        {"prompt": prompt, "can_edit": True, **_split_context(prompt, rows=rows, error=error, note=note)},
    )


@login_required
@require_POST
def split_promote(request, slug):
    """Promote a variant (its page's card, or the monitoring page's comparison): `production`
    moves to its version and the split ends. Answers the split card."""
    prompt = prompt_or_404(slug)
    if not prompt.can_edit(request.user):
        raise PermissionDenied("Only the prompt's owner, its editors and staff can promote a variant.")
    error, note = None, ""
    try:
        split, production = splits.split_promote(prompt=prompt, label=request.POST.get("label", ""), user=request.user)
        note = (
            f"Promoted {split.promoted_label}: production now points at v{production.version.number}; the split ended."
        )
    except services.PromptError as exc:
        error = exc
    return render(
        request,
        "prompts/_split.html",
        {"prompt": prompt, "can_edit": True, **_split_context(prompt, error=error, note=note)},
    )


@login_required
@require_GET
def prompt_export(request, slug):
    prompt = prompt_or_404(slug)
    response = HttpResponse(
        json.dumps(services.prompt_export(prompt), indent=2, ensure_ascii=False) + "\n", content_type="application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="prompt-{prompt.slug}.json"'
    return response


@login_required
@require_POST
def prompt_import(request):
    upload = request.FILES.get("file")
    error = None
    if upload is None:
        error = "Choose an exported prompt file (.json) to import."
    elif upload.size > MAX_IMPORT_BYTES:
        error = f"The file is {upload.size:,} bytes; an import holds at most {MAX_IMPORT_BYTES:,}."
    else:
        try:
            data = parse_json(upload.read())
        except InputError as exc:
            error = f"Nothing was imported. The file is not valid JSON: {exc}"
        else:
            try:
                prompt = services.prompt_import(data=data, owner=request.user)
            except services.PromptError as exc:
                error = f"Nothing was imported. {exc}"
            else:
                return redirect(prompt)
    return render(
        request, "prompts/prompt_list.html", {"prompts": selectors.prompts_page(), "import_error": error}, status=400
    )


# --- playground and chats -------------------------------------------------------------------


def variables_from(post, names) -> dict:
    return {name: post.get(f"var_{name}", "") for name in names}


def playground_versions(prompt, params):
    version_a = version_or_404(prompt, number=params.get("a") or None)
    version_b = version_or_404(prompt, number=params["b"]) if params.get("b") else None
    return [v for v in (version_a, version_b) if v is not None]


def union_variables(versions) -> list[str]:
    return list(dict.fromkeys(name for version in versions for name in version.variables))


def playground_input(prompt, params) -> tuple[list, dict]:
    """The versions a playground request compares (`a`, optionally `b`) and the values of their variables."""
    versions = playground_versions(prompt, params)
    return versions, variables_from(params, union_variables(versions))

from datetime import timedelta
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from chat.models import Message
from prompts import selectors as prompt_selectors
from prompts.models import Prompt
from prompts.views import version_form_values
from studio.input_checks import InputError, parsed_number, whole_number_or_none

from . import exporting, importing, selectors, services
from .models import (
    NEW_CASE_SHARED,
    NEW_CASE_SHARING_NOTE,
    CaseSelection,
    Evaluation,
    EvaluationResult,
    FailureCase,
    ImportDraft,
    Tag,
)
from .scorers import DEFAULT_THRESHOLDS, LABELS, SCORER_TYPES
from .tag_cells import SEPARATORS_NOTE


def _case_or_404(request, case_id) -> FailureCase:
    case = (
        FailureCase.objects.select_related("prompt_version__prompt", "created_by")
        .prefetch_related("tags")
        .filter(pk=case_id)
        .first()
    )
    if case is None or not selectors.can_see_case(request.user, case):
        raise Http404("No such failure case.")  # someone's private case looks like none
    return case


def _evaluation_or_404(request, evaluation_id) -> Evaluation:
    evaluation = (
        Evaluation.objects.select_related("prompt_version__prompt", "created_by").filter(pk=evaluation_id).first()
    )
    if evaluation is None or not selectors.can_see_evaluation(request.user, evaluation):
        raise Http404("No such evaluation.")
    return evaluation


def _list_context(request, filters, **extra) -> dict:
    exported = selectors.cases_for(user=request.user, filters=filters)
    return {
        "page": selectors.cases_page(user=request.user, filters=filters, page=request.GET.get("page")),
        "filters": filters,
        "query": _query(filters),
        "used_statuses_note": selectors.USED_STATUSES_NOTE,
        "dpo_note": exporting.describe_left_out(exporting.dpo_left_out(exported)),
        "names_a_status": bool(filters.get("status")),
        **extra,
    }


def _query(filters: dict) -> str:
    return urlencode(filters)


# --- curation -------------------------------------------------------------------------------------


@login_required
@require_GET
def case_list(request):
    filters = selectors.clean_filters(request.GET)
    context = _list_context(request, filters)
    if request.htmx and request.htmx.target == "case-table":
        return render(request, "evals/_case_table.html", context)
    return render(
        request,
        "evals/case_list.html",
        {
            **context,
            "counts": selectors.counts(user=request.user),
            "prompts": Prompt.objects.order_by("name"),
            "tags": Tag.objects.filter(cases__in=selectors.cases_visible_to(request.user)).distinct(),
            "selections": CaseSelection.objects.filter(owner=request.user),
            "splits": FailureCase.Split.values,
            "statuses": FailureCase.Status.choices,
            "sources": FailureCase.Source.values,
        },
    )


def _selected_cases(request):
    ids = [int(i) for i in request.POST.getlist("case") if i.isdigit() and len(i) < 19]
    return list(selectors.cases_visible_to(request.user).filter(pk__in=ids).select_related("prompt_version__prompt"))


@login_required
@require_POST
def cases_bulk(request):
    cases = _selected_cases(request)
    action = request.POST.get("action", "")
    error, changed = "", 0
    if action == "few_shot":  # opens the prompt's editor, prefilled (a page of its own)
        url = reverse("evals:few_shot") + "?" + "&".join(f"case={case.pk}" for case in cases)
        return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    if not cases:
        error = "Select some cases first (the boxes on the left)."
    else:
        try:
            changed = services.cases_bulk(
                user=request.user, cases=cases, action=action, value=request.POST.get("value", "")
            )
        except services.CaseError as exc:
            error = str(exc)
    filters = selectors.clean_filters(request.POST)
    message = (
        error
        or f"{changed} of {len(cases)} selected case{'s' if len(cases) != 1 else ''} changed"
        + ("" if changed == len(cases) else " (the others are not yours to change)")
        + "."
    )
    return render(
        request, "evals/_case_table.html", _list_context(request, filters, notice=message, notice_error=bool(error))
    )


@login_required
@require_GET
def few_shot(request):
    """The selected cases as few-shot examples of a new version of their prompt: the editor opens
    prefilled, and nothing is saved until the person saves (the form posts to the prompt library)."""
    ids = [int(i) for i in request.GET.getlist("case") if i.isdigit() and len(i) < 19]
    cases = list(
        selectors.cases_visible_to(request.user)
        .filter(pk__in=ids)
        .select_related("prompt_version__prompt")
        .order_by("id")
    )
    try:
        prompt, examples = services.few_shot_examples(cases)
    except services.CaseError as exc:
        return render(request, "error.html", {"status": 400, "message": exc.message}, status=400)
    if not prompt.can_edit(request.user):
        raise PermissionDenied("Only the prompt's owner, its editors and staff can make new versions.")
    base = prompt_selectors.version_resolve(prompt)
    fields = {
        **base.editable_fields(),
        "examples": list(base.examples) + examples,
        "commit_message": f"Few-shot examples from {len(examples)} failure case{'s' if len(examples) != 1 else ''}",
    }
    return render(
        request,
        "prompts/version_new.html",
        {
            "prompt": prompt,
            "base": base,
            "form": version_form_values(fields, user=request.user),
            "prefill_note": f"{len(examples)} failure case{'s were' if len(examples) != 1 else ' was'} added as few-shot "
            "examples (their input and expected answer).",
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def case_detail(request, case_id):
    case = _case_or_404(request, case_id)
    saved, error = False, ""
    if request.method == "POST":
        changes = {
            name: request.POST.get(name) for name in ("expected", "note", "split", "status") if name in request.POST
        }
        if "tags" in request.POST:
            changes["tags"] = request.POST.get("tags", "")
        if "shared" in request.POST:
            changes["shared"] = request.POST.get("shared") == "on"
        try:
            services.case_update(case=case, user=request.user, changes=changes)
            saved = True
        except services.CaseError as exc:
            error = str(exc)
        case = _case_or_404(request, case_id)
        if request.htmx:
            # The header's status badge is outside the form: swapped out of band, so it never shows the old status.
            return render(
                request,
                "evals/_case_form.html",
                _case_context(request, case, saved=saved, error=error, oob=True),
                status=400 if error else 200,
            )
    return render(request, "evals/case_detail.html", _case_context(request, case, saved=saved, error=error))


@login_required
@require_POST
def case_retrieval(request, case_id):
    """The case's retrieval judgment: which of its retrieved passages were right, or "not in the
    knowledge base", or the right passage's text."""
    case = _case_or_404(request, case_id)
    error = ""
    try:
        services.case_judge_retrieval(
            case=case,
            user=request.user,
            chunks=request.POST.getlist("chunk"),
            not_in_kb=request.POST.get("not_in_kb") == "on",
            passage=request.POST.get("passage", "")[:4_000],
        )
    except services.CasePermissionError as exc:
        raise PermissionDenied(str(exc)) from None
    except services.CaseError as exc:
        error = str(exc)
    case = _case_or_404(request, case_id)
    return render(
        request,
        "evals/_case_retrieval.html",
        {**_case_context(request, case), "error": error, "judgment_saved": not error},
        status=400 if error else 200,
    )


def _case_context(request, case, **extra) -> dict:
    judgment = case.retrieval_judgment or {}
    right_chunks = {item.get("chunk") for item in judgment.get("right", []) if item.get("chunk") is not None}
    typed = [item for item in judgment.get("right", []) if item.get("chunk") is None]
    return {
        "right_chunks": right_chunks,
        "typed_passages": typed,
        "shows_retrieval": bool(case.retrieved or judgment or (case.prompt_version and case.prompt_version.retrieval)),
        "case": case,
        "can_edit": selectors.can_edit_case(request.user, case),
        "history": selectors.case_history(case),
        "splits": FailureCase.Split.values,
        "statuses": FailureCase.Status.choices,
        **extra,
    }


@login_required
@require_http_methods(["GET", "POST"])
def case_new(request):
    """A case written by hand (source "manual"); choosing a prompt offers its variables."""
    source = request.POST if request.method == "POST" else request.GET
    values = {
        name: source.get(name, "")
        for name in ("prompt", "version", "input", "actual", "expected", "tags", "split", "note")
    }
    version = _manual_version(values)
    variables = {name: source.get(f"var_{name}", "") for name in (version.variables if version else [])}
    error = ""
    if request.method == "POST":
        raw = {
            **values,
            "prompt": values["prompt"] or None,
            "version": values["version"] or None,
            "input": variables if variables else values["input"],
        }
        try:
            case = services.cases_create(
                user=request.user,
                rows=[raw],
                source=FailureCase.Source.MANUAL,
                shared=source.get("shared") == "on",
                numbered=False,
            )[0]
        except services.CaseError as exc:
            error = str(exc)  # "field: message"
        else:
            return redirect(case)
    return render(
        request,
        "evals/case_new.html",
        {
            "values": values,
            "version": version,
            "variables": variables,
            "error": error,
            "shared": source.get("shared") == "on" if request.method == "POST" else NEW_CASE_SHARED,
            "sharing_note": NEW_CASE_SHARING_NOTE,
            "tags_note": SEPARATORS_NOTE,
            "prompts": Prompt.objects.order_by("name"),
            "splits": FailureCase.Split.values,
        },
        status=400 if error else 200,
    )


def _manual_version(values: dict):
    prompt = prompt_selectors.prompt_by_slug(values["prompt"]) if values["prompt"] else None
    if prompt is None:
        return None
    try:
        return prompt_selectors.version_resolve(prompt, number=values["version"] or None)
    except prompt_selectors.VersionNotFound:
        return None


@login_required
@require_http_methods(["GET", "POST"])
def case_flag(request, message_id):
    """ "Flag as failure" on a reply: GET the form (prefilled), POST the case."""
    message = get_object_or_404(
        Message.objects.select_related("conversation__prompt_version__prompt"),
        pk=message_id,
        conversation__owner=request.user,
        role=Message.Role.ASSISTANT,
    )
    prefill = services.flag_prefill(message)
    values = {"expected": "", "tags": "", "note": "", "split": "train", "shared": NEW_CASE_SHARED}
    error = ""
    if request.method == "POST":
        values = {
            "expected": request.POST.get("expected", ""),
            "tags": request.POST.get("tags", ""),
            "note": request.POST.get("note", ""),
            "split": request.POST.get("split", ""),
            "shared": request.POST.get("shared") == "on",
        }
        try:
            case = services.case_flag(
                user=request.user,
                message=message,
                expected=values["expected"],
                tags=services.clean_tags(values["tags"]),
                note=values["note"],
                split=values["split"],
                shared=values["shared"],
            )
        except services.CaseError as exc:
            error = str(exc)
        else:
            return render(request, "evals/_flagged.html", {"case": case, "message": message})
    return render(
        request,
        "evals/_flag_form.html",
        {
            "message": message,
            "prefill": prefill,
            "values": values,
            "error": error,
            "splits": FailureCase.Split.values,
            "sharing_note": NEW_CASE_SHARING_NOTE,
            "tags_note": SEPARATORS_NOTE,
        },
        status=400 if error else 200,
    )


@login_required
@require_POST
def case_prefer(request, message_id):
    """ "Keep this one" on a reply with siblings: the pairs (kept, other) become preference cases."""
    kept = get_object_or_404(
        Message.objects.select_related("conversation"),
        pk=message_id,
        conversation__owner=request.user,
        role=Message.Role.ASSISTANT,
    )
    try:
        cases = services.cases_prefer(user=request.user, kept=kept)
    except services.CaseError as exc:
        return render(request, "evals/_preferred.html", {"message": kept, "error": str(exc)}, status=400)
    return render(request, "evals/_preferred.html", {"message": kept, "cases": cases})


@login_required
@require_POST
def selection_save(request):
    filters = selectors.clean_filters(request.POST)
    filters.pop("selection", None)
    try:
        selection = services.selection_save(user=request.user, name=request.POST.get("name", ""), filters=filters)
    except services.CaseError as exc:
        return render(
            request,
            "evals/_selections.html",
            {"selections": CaseSelection.objects.filter(owner=request.user), "error": str(exc)},
            status=400,
        )
    return render(
        request,
        "evals/_selections.html",
        {"selections": CaseSelection.objects.filter(owner=request.user), "saved": selection},
    )


@login_required
@require_POST
def selection_delete(request, selection_id):
    CaseSelection.objects.filter(owner=request.user, pk=selection_id).delete()
    return render(request, "evals/_selections.html", {"selections": CaseSelection.objects.filter(owner=request.user)})


@login_required
@require_GET
def cases_export(request):
    export_format = request.GET.get("format", "sft")
    if export_format not in exporting.FORMATS:
        raise Http404("Export as sft, dpo or csv.")
    filters = selectors.clean_filters(request.GET)
    return export_response(selectors.cases_for(user=request.user, filters=filters), export_format, filters)


def export_response(cases, export_format: str, filters: dict):
    extension, content_type = exporting.FORMATS[export_format]
    name = "-".join(["failure-cases", export_format, *[filters[k] for k in ("prompt", "split", "tag") if k in filters]])
    response = StreamingHttpResponse(exporting.export_lines(cases, export_format), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{_safe_filename(name)}.{extension}"'
    if export_format == "dpo":  # what the file leaves out, counted before it streams
        left_out = exporting.dpo_left_out(cases)
        response["X-Studio-Left-Out-No-Actual"] = str(left_out["no_actual"])
        response["X-Studio-Left-Out-Same-Answer"] = str(left_out["same_answer"])
    return response


def _safe_filename(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:120]


@login_required
@require_GET
def prompt_summary(request, slug):
    """On a prompt's page: its open failure cases, and "run against them" for the version shown."""
    prompt = prompt_selectors.prompt_by_slug(slug)
    if prompt is None:
        raise Http404("There is no such prompt.")
    cases = selectors.cases_visible_to(request.user).filter(prompt_version__prompt=prompt)
    return render(
        request,
        "evals/_prompt_summary.html",
        {
            "prompt": prompt,
            "version_number": request.GET.get("version", ""),
            "total": cases.count(),
            "open": cases.filter(status=FailureCase.Status.OPEN).count(),
        },
    )


# --- import ---------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def case_import(request):
    """Step 1: upload a CSV or JSONL file."""
    error = ""
    if request.method == "POST":
        upload = request.FILES.get("file")
        if upload is None:
            error = "Choose a CSV or JSONL file."
        else:
            try:
                columns, rows = importing.parse_file(upload.name, upload.read())
            except importing.ImportFileError as exc:
                error = f"Nothing was imported. {exc}"
            else:
                ImportDraft.objects.filter(created_at__lt=timezone.now() - timedelta(days=1)).exclude(
                    status__in=("queued", "running")
                ).delete()
                draft = ImportDraft.objects.create(
                    owner=request.user, filename=upload.name[:200], columns=columns, rows=rows
                )
                return redirect("evals:import_map", draft.pk)
    return render(
        request,
        "evals/import_upload.html",
        {"error": error, "tags_note": SEPARATORS_NOTE, "sharing_note": NEW_CASE_SHARING_NOTE},
        status=400 if error else 200,
    )


def _mapping_from(request, draft) -> tuple[dict, dict, object]:
    """(mapping field → column, fixed values, the prompt version whose variables are offered).
    Nothing sent yet: what the draft's last import used, else guessed from the header."""
    source = request.POST if request.method == "POST" else request.GET
    if "mapped" not in source and draft.mapping:
        fixed = dict(draft.fixed)
    else:
        fixed = {
            name: source.get(f"fixed_{name}", "")
            for name in ("prompt", "version", "split")
            if source.get(f"fixed_{name}")
        }
    if "prompt" not in fixed and "mapped" not in source and "prompt" in importing.guess_mapping(draft.columns):
        fixed["prompt"] = "(column)"
    version = None
    if fixed.get("prompt") not in (None, "", "(column)", "-"):
        prompt = prompt_selectors.prompt_by_slug(fixed["prompt"])
        if prompt is not None:
            try:
                version = prompt_selectors.version_resolve(prompt, number=fixed.get("version"))
            except prompt_selectors.VersionNotFound:
                version = None
    guessed = importing.guess_mapping(draft.columns, version.variables if version else [])
    if "mapped" not in source:
        return (dict(draft.mapping) if draft.mapping else guessed), fixed, version
    mapping = {target: source.get(f"map_{target}") for target in importing.TARGETS if source.get(f"map_{target}")}
    for name in version.variables if version else []:
        column = source.get(f"map_var_{name}") if f"map_var_{name}" in source else guessed.get(f"var:{name}")
        if column:
            mapping[f"var:{name}"] = column
    return mapping, fixed, version


def _import_options(request, draft) -> dict:
    """Held-out share (0-1) and only-valid, as sent; else as the draft's last import had them."""
    source = request.POST if request.method == "POST" else request.GET
    if "mapped" not in source and "import" not in source:
        return {"eval_share": 0.0, "only_valid": False, "shared": NEW_CASE_SHARED, **draft.options}
    try:
        share = parsed_number(source.get("eval_share") or 0) / 100
    except InputError:
        share = -1  # import_start refuses it, saying the range
    return {"eval_share": share, "only_valid": source.get("only_valid") == "on", "shared": source.get("shared") == "on"}


@login_required
@require_http_methods(["GET", "POST"])
def case_import_map(request, draft_id):
    """Step 2: map columns to fields and see the rows checked, a page at a time; step 3: the import,
    a job that checks every row once (its progress and outcome on this page)."""
    draft = get_object_or_404(ImportDraft, pk=draft_id, owner=request.user)
    mapping, fixed, version = _mapping_from(request, draft)
    options = _import_options(request, draft)
    error = ""
    if request.method == "POST" and "import" in request.POST and not draft.active:
        try:
            importing.import_start(draft=draft, mapping=mapping, fixed=fixed, options=options)
        except services.CaseError as exc:
            error = str(exc)
        else:
            url = reverse("evals:import_map", args=[draft.pk])
            return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    problem = importing.mapping_problem(mapping, fixed)
    page = Paginator(range(len(draft.rows)), importing.PREVIEW_ROWS).get_page(source_page(request))
    checked = None
    imported = draft.status == "finished" and draft.outcome.get("imported")
    if problem is None and not imported and not draft.active:
        rows = draft.rows[page.start_index() - 1 : page.end_index()]
        checked = importing.check_rows(rows, mapping, fixed, user=request.user, first_number=page.start_index())
    context = {
        "draft": draft,
        "mapping": mapping,
        "fixed": fixed,
        "version": version,
        "checked": checked,
        "problem": problem,
        "page": page,
        "options": options,
        "targets": list(importing.TARGETS),
        "show_check": not imported and not draft.active,
        "prompts": Prompt.objects.order_by("name"),
        "splits": FailureCase.Split.values,
        "error": error,
        "shown": _rows_shown(draft.rows, page, checked),
        "sharing_note": NEW_CASE_SHARING_NOTE,
        "tags_note": SEPARATORS_NOTE,
    }
    if request.htmx and request.htmx.target in ("import-preview", "import-job"):
        return render(request, "evals/_import_preview.html", context)
    return render(request, "evals/import_map.html", context, status=400 if error else 200)


def source_page(request):
    source = request.POST if request.method == "POST" else request.GET
    return source.get("page") or source.get("current_page") or 1


def _rows_shown(rows, page, checked) -> list[dict]:
    """The page's rows as the preview lists them: each with its fields, or its errors, or why it is skipped."""
    shown = (
        {
            number: {"number": number, "raw": rows[number - 1], "fields": None, "errors": [], "duplicate": ""}
            for number in range(page.start_index(), page.end_index() + 1)
        }
        if page.paginator.count
        else {}
    )
    if checked is not None:
        for number, fields in checked["valid"]:
            shown[number]["fields"] = fields
        for number, column, message in checked["errors"]:
            shown[number]["errors"].append(f"{column}: {message}")
        for number, why in checked["duplicates"]:
            shown[number]["duplicate"] = why
    return list(shown.values())


# --- evaluations ----------------------------------------------------------------------------------


@login_required
@require_GET
def evaluation_list(request):
    return render(
        request, "evals/evaluation_list.html", {"evaluations": selectors.evaluations_visible_to(request.user)[:100]}
    )


@login_required
@require_http_methods(["GET", "POST"])
def evaluation_new(request):
    source = request.POST if request.method == "POST" else request.GET
    values = {
        name: source.get(name, "")
        for name in (
            "prompt",
            "version",
            "model",
            "split",
            "tag",
            "status",
            "selection",
            "judge_prompt",
            "judge_version",
        )
    }
    chosen = source.getlist("scorer")  # nothing ticked beforehand: a case must pass every ticked scorer
    error = ""
    if request.method == "POST" and not chosen:
        error = "scorers: tick at least one scorer (a case passes when it passes every scorer you tick)"
    elif request.method == "POST":
        scorers = []
        for kind in chosen:
            spec = {"type": kind}
            if source.get(f"threshold_{kind}"):
                try:
                    spec["threshold"] = parsed_number(source.get(f"threshold_{kind}"))
                except InputError:
                    spec["threshold"] = "?"  # the scorers' check refuses it, saying the range
            if kind == "regex":
                spec["pattern"] = source.get("pattern_regex", "")
            if kind == "contains" and source.get("text_contains"):
                spec["text"] = source.get("text_contains")
            if kind in ("json_equal", "valid_json", "json_schema"):
                spec["extract"] = source.get("extract_json") == "on"
            if kind == "tool_call" and source.get("fields_tool_call", "").strip():
                spec["fields"] = [field for field in source["fields_tool_call"].split(",") if field.strip()]
            if kind == "llm_judge":
                spec["prompt"] = values["judge_prompt"]
                spec["version"] = int(values["judge_version"]) if values["judge_version"].isdigit() else None
            scorers.append(spec)
        try:
            version = _version_for(values)
            evaluation = services.evaluation_create(
                user=request.user,
                version=version,
                model_name=values["model"],
                scorers=scorers,
                filters={k: values[k] for k in ("split", "tag", "status", "selection") if values[k]},
            )
        except services.CaseError as exc:
            error = str(exc)
        else:
            return redirect(evaluation)
    return render(
        request,
        "evals/evaluation_new.html",
        {
            "values": values,
            "chosen": chosen,
            "tool_call_fields": source.get("fields_tool_call", ""),
            "error": error,
            "prompts": Prompt.objects.order_by("name"),
            "models": selectors.available_models(),
            "scorer_choices": [(kind, *LABELS[kind], DEFAULT_THRESHOLDS[kind]) for kind in SCORER_TYPES],
            "selections": CaseSelection.objects.filter(owner=request.user),
            "splits": FailureCase.Split.values,
            "statuses": FailureCase.Status.choices,
            "used_statuses_note": selectors.USED_STATUSES_NOTE,
        },
        status=400 if error else 200,
    )


def _version_for(values: dict):
    prompt = prompt_selectors.prompt_by_slug(values["prompt"]) if values["prompt"] else None
    if prompt is None:
        raise services.EvaluationError("choose the prompt to evaluate", "prompt")
    try:
        return prompt_selectors.version_resolve(prompt, number=values["version"] or None)
    except prompt_selectors.VersionNotFound as exc:
        raise services.EvaluationError(str(exc), "version") from None


def _results_context(request, evaluation) -> dict:
    """While it runs: the counts and the newest results; once it ends: a page of its results."""
    if evaluation.active:
        results, page = selectors.results_newest(evaluation=evaluation, user=request.user), None
    else:
        page = selectors.results_page(evaluation=evaluation, user=request.user, page=request.GET.get("page"))
        results = page.object_list
    return {
        "evaluation": evaluation,
        "results": results,
        "page": page,
        "retrieval": selectors.retrieval_figures_of(evaluation),
        "by_tool": selectors.by_tool_of(evaluation),
        "can_cancel": evaluation.active and (evaluation.created_by_id == request.user.pk or request.user.is_staff),
        "others": selectors.evaluations_visible_to(request.user)
        .filter(prompt_version__prompt=evaluation.prompt_version.prompt)
        .exclude(pk=evaluation.pk)[:20],
    }


@login_required
@require_GET
def evaluation_detail(request, evaluation_id):
    evaluation = _evaluation_or_404(request, evaluation_id)
    return render(request, "evals/evaluation_detail.html", _results_context(request, evaluation))


@login_required
@require_GET
def evaluation_progress(request, evaluation_id):
    """Polled every second while it runs: progress, and the newest results."""
    evaluation = _evaluation_or_404(request, evaluation_id)
    return render(request, "evals/_evaluation_live.html", _results_context(request, evaluation))


@login_required
@require_POST
def evaluation_cancel(request, evaluation_id):
    evaluation = _evaluation_or_404(request, evaluation_id)
    try:
        services.evaluation_cancel(evaluation=evaluation, user=request.user)
    except services.CasePermissionError as exc:
        raise PermissionDenied(str(exc)) from None
    return render(request, "evals/_evaluation_live.html", _results_context(request, evaluation))


@login_required
@require_POST
def result_verdict(request, evaluation_id, result_id):
    evaluation = _evaluation_or_404(request, evaluation_id)
    result = get_object_or_404(EvaluationResult.objects.select_related("case"), pk=result_id, evaluation=evaluation)
    try:
        services.result_verdict(
            result=result,
            user=request.user,
            verdict=request.POST.get("verdict", ""),
            write_back=request.POST.get("write_back") == "on",
        )
    except services.CasePermissionError as exc:
        raise PermissionDenied(str(exc)) from None
    except services.CaseError as exc:
        return render(
            request,
            "evals/_result_row.html",
            {"result": _judged(result, request.user), "evaluation": evaluation, "error": str(exc)},
            status=400,
        )
    result.refresh_from_db()
    evaluation.refresh_from_db()
    response = render(
        request,
        "evals/_result_row.html",
        {"result": _judged(result, request.user), "evaluation": evaluation, "saved": True},
    )
    response["HX-Trigger"] = "evaluation-changed"  # the pass rate above the table reloads itself
    return response


def _judged(result, user):
    result.case_visible = selectors.can_see_case(user, result.case)
    result.can_judge = selectors.can_edit_case(user, result.case)
    return selectors.with_example_links([result], user)[0]


@login_required
@require_http_methods(["GET", "POST"])
def evaluation_compare(request):
    source = request.POST if request.method == "POST" else request.GET
    first = _evaluation_or_404(request, whole_number_or_none(source.get("a")))
    second = _evaluation_or_404(request, whole_number_or_none(source.get("b")))
    page = source.get("page")
    comparison = selectors.comparison(first, second, user=request.user, page=page)
    notice = ""
    if request.method == "POST":
        fixed = selectors.cases_visible_to(request.user).filter(pk__in=comparison["fixed_case_ids"])
        changed = services.cases_mark_fixed(user=request.user, cases=list(fixed))
        notice = f"{changed} fixed case{'s' if changed != 1 else ''} marked fixed."
        comparison = selectors.comparison(first, second, user=request.user, page=page)
    return render(
        request,
        "evals/evaluation_compare.html",
        {"first": first, "second": second, **comparison, "notice": notice, "query": f"a={first.pk}&b={second.pk}&"},
    )

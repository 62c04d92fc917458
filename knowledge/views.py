"""Pages of knowledge bases: the list (and a new base), a base's documents with their ingestion
live, uploads, deletes, a search box and its index (a rebuild with new settings, live), and a
document's chunks; retrieval tests (a section of the base's page, a page per test) and their
tuning sweeps (a form, a page per sweep with its table and "Use this setting"). The same
services and search the API calls; who may do what is decided there (selectors,
services.require_owner, retrieval_tests.require_tests_owner), never here."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.core.paginator import Paginator
from django.http import Http404
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from studio.errors import Forbidden, NotFound, StudioError
from studio.input_checks import InputError, parsed_number
from studio.llm.numpy_embedder import EMBEDDING_MODEL

from . import engines, retrieval_tests, selectors, services, sweep
from . import search as knowledge_search
from .models import Document

DOCUMENTS_PER_PAGE = 100
CHUNKS_PER_PAGE = 50


def _knowledge_base_or_404(request, knowledge_base_id):
    try:
        return selectors.knowledge_base_for(user=request.user, knowledge_base_id=knowledge_base_id)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _document_or_404(knowledge_base, document_id):
    try:
        return selectors.document_for(knowledge_base=knowledge_base, document_id=document_id)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _require_owner(request, knowledge_base) -> None:
    try:
        services.require_owner(knowledge_base, request.user)
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from None


@login_required
@require_http_methods(["GET", "POST"])
def knowledge_base_list(request):
    values, errors = {"name": "", "description": "", "shared": False, "embedding_model": EMBEDDING_MODEL}, {}
    if request.method == "POST":
        values = {
            "name": request.POST.get("name", ""),
            "description": request.POST.get("description", ""),
            "shared": request.POST.get("shared") == "on",
            "embedding_model": request.POST.get("embedding_model", ""),
        }
        try:
            knowledge_base = services.knowledge_base_create(owner=request.user, **values)
        except services.KnowledgeError as exc:
            errors[exc.field or "name"] = exc.message
        else:
            return redirect("knowledge:detail", knowledge_base_id=knowledge_base.pk)
    return render(
        request,
        "knowledge/knowledge_base_list.html",
        {
            "knowledge_bases": selectors.knowledge_bases_with_counts(user=request.user),
            "values": values,
            "errors": errors,
            "storage": services.storage_use(user=request.user),
            "embedders": engines.embedder_names(),  # a choice only where KNOWLEDGE_EMBEDDING_ENGINES names engines
        },
        status=400 if errors else 200,
    )


def _documents_context(request, knowledge_base, **extra) -> dict:
    page = Paginator(selectors.documents_of(knowledge_base=knowledge_base), DOCUMENTS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    is_owner = knowledge_base.owner_id == request.user.pk
    return {
        "knowledge_base": knowledge_base,
        "page": page,
        "polling": any(doc.active for doc in page.object_list),
        "is_owner": is_owner,
        "storage": services.storage_use(user=request.user) if is_owner else None,
        **extra,
    }


def _search_values(source) -> dict:
    return {
        "q": source.get("q", ""),
        "mode": source.get("mode", "hybrid"),
        "k": source.get("k", str(knowledge_search.DEFAULT_K)),
    }


def _index_context(request, knowledge_base, *, values=None, errors=None, finished="") -> dict:
    """The index card: its settings, a rebuild's progress, and the rebuild form (its owner's).
    `finished`: how the rebuild it watched ended ("rebuilt" or "cancelled"), or ""."""
    return {
        "knowledge_base": knowledge_base,
        "rebuild": knowledge_base.rebuild_progress(),
        "rebuild_values": values
        or {
            "chunk_tokens": knowledge_base.chunk_tokens,
            "chunk_overlap": knowledge_base.chunk_overlap,
            "embedding_model": knowledge_base.embedding_model,
        },
        "rebuild_errors": errors or {},
        "embedding_models": [knowledge_base.embedding_model],  # a rebuild keeps the base's embedder
        "rebuilt": finished,
        "is_owner": knowledge_base.owner_id == request.user.pk,
        "limits": {"min_tokens": services.MIN_CHUNK_TOKENS, "max_tokens": services.MAX_CHUNK_TOKENS},
    }


@login_required
@require_GET
def knowledge_base_detail(request, knowledge_base_id):
    knowledge_base = _knowledge_base_or_404(request, knowledge_base_id)
    return render(
        request,
        "knowledge/knowledge_base_detail.html",
        {
            **_documents_context(request, knowledge_base),
            **_index_context(request, knowledge_base),
            **_retrieval_tests_context(request, knowledge_base),
            **_ranking_context(request, knowledge_base),
            "search": _search_values(request.GET),
            "modes": knowledge_search.MODES,
        },
    )


def _ranking_context(request, knowledge_base, *, errors=None, saved=False) -> dict:
    """The ranking card: how searches rank the base, and (its owner's) the form to change it."""
    return {
        "knowledge_base": knowledge_base,
        "ranking_errors": errors or {},
        "ranking_saved": saved,
        "reranker_configured": engines.reranker_configured(),
        "rerank_candidates": knowledge_search.RERANK_CANDIDATES,
        "keyword_share": 1.0 - knowledge_base.fusion_weight,
        "is_owner": knowledge_base.owner_id == request.user.pk,
    }


@login_required
@require_http_methods(["GET", "POST"])
def ranking(request, knowledge_base_id):
    """POST (its owner): change the ranking settings (no rebuild); the card comes back."""
    knowledge_base = _knowledge_base_or_404(request, knowledge_base_id)
    if request.method == "GET":
        return redirect("knowledge:detail", knowledge_base_id=knowledge_base.pk)
    _require_owner(request, knowledge_base)
    errors = {}
    try:
        services.knowledge_base_ranking_update(
            user=request.user,
            knowledge_base=knowledge_base,
            fusion_weight=request.POST.get("fusion_weight", ""),
            collapse_duplicates=request.POST.get("collapse_duplicates") == "on",
            rerank=request.POST.get("rerank") == "on",
            expand_query=request.POST.get("expand_query") == "on",
        )
    except services.KnowledgeError as exc:
        errors[exc.field or "form"] = exc.message
        knowledge_base.refresh_from_db()
    context = _ranking_context(request, knowledge_base, errors=errors, saved=not errors)
    if request.htmx:
        return render(request, "knowledge/_ranking.html", context, status=400 if errors else 200)
    return redirect("knowledge:detail", knowledge_base_id=knowledge_base.pk)


@login_required
@require_http_methods(["GET", "POST"])
def rebuild(request, knowledge_base_id):
    """POST (its owner): rebuild the index with new settings, in the background. GET: the index card,
    polled every 2 s while a rebuild runs; the poll that finds it done also refreshes the documents."""
    knowledge_base = _knowledge_base_or_404(request, knowledge_base_id)
    values, errors = None, {}
    if request.method == "POST":
        _require_owner(request, knowledge_base)
        values = {name: request.POST.get(name, "") for name in ("chunk_tokens", "chunk_overlap", "embedding_model")}
        try:
            services.knowledge_base_rebuild(user=request.user, knowledge_base=knowledge_base, **values)
        except services.KnowledgeError as exc:
            errors["form" if exc.field in ("", "status") else exc.field] = exc.message
        knowledge_base.refresh_from_db()
    elif not request.htmx:
        return redirect("knowledge:detail", knowledge_base_id=knowledge_base.pk)
    finished = ""
    if request.method == "GET" and not knowledge_base.rebuilding:
        # The card polls with the generation it watched being built: in use now means it switched over.
        watched = request.GET.get("generation", "")
        finished = "rebuilt" if watched == str(knowledge_base.active_generation) else "cancelled"
    context = _index_context(
        request, knowledge_base, values=values if errors else None, errors=errors, finished=finished
    )
    status = 400 if errors else 200
    if request.htmx:
        if finished:  # the documents' passage counts changed with the switch
            context.update(_documents_context(request, knowledge_base), oob=True)
        return render(request, "knowledge/_index.html", context, status=status)
    if not errors:
        return redirect("knowledge:detail", knowledge_base_id=knowledge_base.pk)
    return render(
        request,
        "knowledge/knowledge_base_detail.html",
        {
            **_documents_context(request, knowledge_base),
            **context,
            "search": _search_values({}),
            "modes": knowledge_search.MODES,
        },
        status=status,
    )


@login_required
@require_POST
def rebuild_cancel(request, knowledge_base_id):
    """POST (its owner): stop the rebuild; the index in use stays as it was."""
    knowledge_base = _knowledge_base_or_404(request, knowledge_base_id)
    _require_owner(request, knowledge_base)
    errors = {}
    try:
        services.knowledge_base_rebuild_cancel(user=request.user, knowledge_base=knowledge_base)
    except services.KnowledgeError as exc:
        errors["form"] = exc.message
    if not request.htmx:
        return redirect("knowledge:detail", knowledge_base_id=knowledge_base.pk)
    context = _index_context(request, knowledge_base, errors=errors, finished="" if errors else "cancelled")
    context.update(_documents_context(request, knowledge_base), oob=True)
    return render(request, "knowledge/_index.html", context, status=409 if errors else 200)


@login_required
@require_GET
def documents(request, knowledge_base_id):
    """Polled every 2 s while a document is queued or processing: the table, in place."""
    knowledge_base = _knowledge_base_or_404(request, knowledge_base_id)
    return render(request, "knowledge/_documents.html", _documents_context(request, knowledge_base))


@login_required
@require_POST
def documents_upload(request, knowledge_base_id):
    knowledge_base = _knowledge_base_or_404(request, knowledge_base_id)
    _require_owner(request, knowledge_base)  # before the body is parsed: a stranger's upload is not stored
    error, status, added = "", 200, []
    try:
        added = services.documents_add(
            user=request.user, knowledge_base=knowledge_base, files=request.FILES.getlist("file")
        )
    except RequestDataTooBig as exc:
        error, status = f"The upload is too large: {exc}", 413
    except (MultiPartParserError, SuspiciousOperation) as exc:  # too many files, a broken body
        error, status = f"The upload could not be read: {exc}", 400
    except services.KnowledgeError as exc:  # QuotaExceeded: 413
        error, status = exc.message, exc.status
    queued = [
        item.document
        for item in added
        if (not item.duplicate or item.retried) and item.document.status == Document.Status.QUEUED
    ]
    context = _documents_context(
        request,
        knowledge_base,
        upload_error=error,
        oob=True,
        duplicates=[item.document for item in added if item.duplicate and not item.retried],
        refused=[item.document for item in added if not item.duplicate and item.document.error],
        upload=selectors.upload_progress(knowledge_base=knowledge_base, document_ids=[d.pk for d in queued]),
    )
    template = "knowledge/_upload.html" if request.htmx else "knowledge/knowledge_base_detail.html"
    if not request.htmx:
        context.update(_index_context(request, knowledge_base), search=_search_values({}), modes=knowledge_search.MODES)
    return render(request, template, context, status=status)


@login_required
@require_GET
def upload_progress(request, knowledge_base_id):
    """The notice of one upload, polled every 2 s while its documents are queued or being indexed:
    how many are ready (and failed) so far; the poll stops when none is left waiting."""
    knowledge_base = _knowledge_base_or_404(request, knowledge_base_id)
    return render(
        request,
        "knowledge/_upload_progress.html",
        {
            "knowledge_base": knowledge_base,
            "upload": selectors.upload_progress(
                knowledge_base=knowledge_base, document_ids=selectors.parse_id_ranges(request.GET.get("ids", ""))
            ),
        },
    )


@login_required
@require_POST
def document_delete(request, knowledge_base_id, document_id):
    knowledge_base = _knowledge_base_or_404(request, knowledge_base_id)
    document = _document_or_404(knowledge_base, document_id)
    try:
        services.document_delete(user=request.user, document=document)
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from None
    if request.htmx:
        return render(request, "knowledge/_documents.html", _documents_context(request, knowledge_base))
    return redirect("knowledge:detail", knowledge_base_id=knowledge_base.pk)


@login_required
@require_GET
def search(request, knowledge_base_id):
    """The search box's answer: ranked passages, through the same search the API runs."""
    knowledge_base = _knowledge_base_or_404(request, knowledge_base_id)
    values, answer, errors = _search_values(request.GET), None, {}
    try:
        k = parsed_number(values["k"], whole=True)  # out of 1-50, the search takes the nearest and says so
    except InputError as exc:
        errors["k"] = str(exc)
    else:
        try:
            answer = knowledge_search.search(
                user=request.user, knowledge_base=knowledge_base, query=values["q"], k=k, mode=values["mode"]
            )
        except knowledge_search.SearchError as exc:
            errors[exc.field or "q"] = exc.message
    context = {
        "knowledge_base": knowledge_base,
        "search": values,
        "answer": answer,
        "errors": errors,
        "modes": knowledge_search.MODES,
    }
    if request.htmx:
        return render(request, "knowledge/_search.html", context, status=400 if errors else 200)
    return render(
        request,
        "knowledge/knowledge_base_detail.html",
        {**_documents_context(request, knowledge_base), **_index_context(request, knowledge_base), **context},
        status=400 if errors else 200,
    )


@login_required
@require_GET
def document_detail(request, knowledge_base_id, document_id):
    """A document's passages, 50 a page. `?passage=<chunk id>` (a citation's link): opens the page
    that holds that passage, marked, and its `#chunk-<id>` scrolls to it."""
    knowledge_base = _knowledge_base_or_404(request, knowledge_base_id)
    document = _document_or_404(knowledge_base, document_id)
    chunks = document.chunks.active().only("ordinal", "page", "heading", "text", "token_count").order_by("ordinal")
    cited_id = request.GET.get("passage", "")
    cited = chunks.filter(pk=int(cited_id)).first() if cited_id.isdigit() and len(cited_id) < 19 else None
    page_number = request.GET.get("page")
    if cited is not None and not page_number:
        page_number = chunks.filter(ordinal__lt=cited.ordinal).count() // CHUNKS_PER_PAGE + 1
    return render(
        request,
        "knowledge/document_detail.html",
        {
            "knowledge_base": knowledge_base,
            "document": document,
            "cited_id": cited.pk if cited else None,
            "cited_gone": bool(cited_id) and cited is None,
            "page": Paginator(chunks, CHUNKS_PER_PAGE).get_page(page_number),
        },
    )


# --- Retrieval tests (knowledge/retrieval_tests.py) --------------------------------------------

RESULTS_PER_PAGE = 100


def _test_or_404(knowledge_base, test_id):
    try:
        return selectors.retrieval_test_for(knowledge_base=knowledge_base, test_id=test_id)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _require_tests_owner(request, knowledge_base) -> None:
    try:
        retrieval_tests.require_tests_owner(knowledge_base, request.user)
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from None


def _retrieval_tests_context(request, knowledge_base, **extra) -> dict:
    """The base page's Retrieval tests section: each test with its last figures, whether they hold
    for the base now, and whether a job is measuring it (the section polls while one is)."""
    version = retrieval_tests.version_of(knowledge_base)
    tests = list(selectors.retrieval_tests_of(knowledge_base=knowledge_base))
    for test in tests:
        test.current = test.measured_version == version
        test.measuring = getattr(test, "measurement", None) is not None and test.measurement.active
    return {
        "knowledge_base": knowledge_base,
        "retrieval_tests": tests,
        "retrieval_tests_loaded": True,
        "retrieval_tests_polling": any(test.measuring for test in tests),
        "is_owner": knowledge_base.owner_id == request.user.pk,
        "test_values": {"name": ""},
        "test_errors": {},
        **extra,
    }


def _full_page(request, knowledge_base, context: dict, status: int):
    return render(
        request,
        "knowledge/knowledge_base_detail.html",
        {
            **_documents_context(request, knowledge_base),
            **_index_context(request, knowledge_base),
            "search": _search_values({}),
            "modes": knowledge_search.MODES,
            **context,
        },
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def retrieval_test_list(request, knowledge_base_id):
    """GET: the Retrieval tests section (the base's page loads it; it polls itself while a test is
    measured). POST (its owner): a test imported from a JSONL or CSV file."""
    knowledge_base = _knowledge_base_or_404(request, knowledge_base_id)
    if request.method == "GET":
        if not request.htmx:
            return redirect("knowledge:detail", knowledge_base_id=knowledge_base.pk)
        return render(request, "knowledge/_retrieval_tests.html", _retrieval_tests_context(request, knowledge_base))
    _require_tests_owner(request, knowledge_base)  # before the file is read
    values, errors, test = {"name": request.POST.get("name", "")}, {}, None
    try:
        test = retrieval_tests.retrieval_test_import(
            user=request.user, knowledge_base=knowledge_base, name=values["name"], upload=request.FILES.get("file")
        )
    except RequestDataTooBig as exc:
        errors["file"] = f"The file is too large: {exc}"
    except (MultiPartParserError, SuspiciousOperation) as exc:
        errors["file"] = f"The upload could not be read: {exc}"
    except retrieval_tests.RetrievalTestError as exc:
        errors["name" if exc.field == "name" else "file"] = str(exc)
    return _retrieval_tests_answer(request, knowledge_base, test, values, errors)


@login_required
@require_POST
def retrieval_test_from_cases(request, knowledge_base_id):
    """ "Use judged cases as a retrieval test" (its owner): the failure cases they see whose passages
    were judged, as a test of this base."""
    knowledge_base = _knowledge_base_or_404(request, knowledge_base_id)
    _require_tests_owner(request, knowledge_base)
    errors, test = {}, None
    try:
        test = retrieval_tests.retrieval_test_from_cases(user=request.user, knowledge_base=knowledge_base)
    except StudioError as exc:
        errors["from_cases"] = exc.message
    return _retrieval_tests_answer(request, knowledge_base, test, {"name": ""}, errors)


def _retrieval_tests_answer(request, knowledge_base, test, values: dict, errors: dict):
    if test is not None and not request.htmx:
        return redirect("knowledge:retrieval_test", knowledge_base_id=knowledge_base.pk, test_id=test.pk)
    context = _retrieval_tests_context(
        request, knowledge_base, test_values=values if errors else {"name": ""}, test_errors=errors, created=test
    )
    status = 400 if errors else 200
    if request.htmx:
        return render(request, "knowledge/_retrieval_tests.html", context, status=status)
    return _full_page(request, knowledge_base, context, status)


def _retrieval_test_context(request, knowledge_base, test, state) -> dict:
    questions = Paginator(test.questions.order_by("ordinal"), RESULTS_PER_PAGE).get_page(request.GET.get("page"))
    measured = test.measured_version or {key: getattr(knowledge_base, key) for key in retrieval_tests.SETTINGS}
    return {
        "knowledge_base": knowledge_base,
        "test": test,
        "state": state,
        "figures": test.figures or {},
        "settings": measured,
        "page": questions,
        "is_owner": knowledge_base.owner_id == request.user.pk,
        "in_request": retrieval_tests.MEASURE_IN_REQUEST,
    }


@login_required
@require_GET
def retrieval_test(request, knowledge_base_id, test_id):
    """A test's figures and each question's rank, measured first when the base changed since (here
    for a small test; else a job, whose progress the page polls every 2 s)."""
    knowledge_base = _knowledge_base_or_404(request, knowledge_base_id)
    test = _test_or_404(knowledge_base, test_id)
    state = retrieval_tests.retrieval_test_state(test, user=request.user)
    context = _retrieval_test_context(request, knowledge_base, test, state)
    template = "knowledge/_retrieval_test.html" if request.htmx else "knowledge/retrieval_test.html"
    return render(request, template, context)


@login_required
@require_POST
def retrieval_test_measure(request, knowledge_base_id, test_id):
    """Measure again (its base's owner)."""
    knowledge_base = _knowledge_base_or_404(request, knowledge_base_id)
    test = _test_or_404(knowledge_base, test_id)
    _require_tests_owner(request, knowledge_base)
    state = retrieval_tests.retrieval_test_measure(user=request.user, test=test)
    if not request.htmx:
        return redirect("knowledge:retrieval_test", knowledge_base_id=knowledge_base.pk, test_id=test.pk)
    return render(
        request, "knowledge/_retrieval_test.html", _retrieval_test_context(request, knowledge_base, test, state)
    )


@login_required
@require_POST
def retrieval_test_delete(request, knowledge_base_id, test_id):
    knowledge_base = _knowledge_base_or_404(request, knowledge_base_id)
    test = _test_or_404(knowledge_base, test_id)
    _require_tests_owner(request, knowledge_base)
    retrieval_tests.retrieval_test_delete(user=request.user, test=test)
    url = f"{reverse('knowledge:detail', args=[knowledge_base.pk])}#retrieval-tests"
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


# --- Tuning sweeps (knowledge/sweep.py) -------------------------------------------------------------


def _sweep_or_404(knowledge_base, sweep_id):
    try:
        return selectors.sweep_for(knowledge_base=knowledge_base, sweep_id=sweep_id)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _require_sweep_owner(request, knowledge_base) -> None:
    try:
        sweep.require_sweep_owner(knowledge_base, request.user)
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from None


def _chunk_choices(knowledge_base) -> list[dict]:
    """The form's chunk settings: each size a sweep tries with its usual overlap, the base's own
    with its own (first, marked in use); checked: the default grid's (sweep.default_grid)."""
    own = (knowledge_base.chunk_tokens, knowledge_base.chunk_overlap)
    offered = [own] + [(size, sweep.FORM_OVERLAPS[size]) for size in sweep.CHUNK_SIZES if size != own[0]]
    defaults = {tuple(pair) for pair in sweep.default_grid(knowledge_base)["chunk"]}
    return [
        {
            "value": f"{tokens}:{overlap}",
            "tokens": tokens,
            "overlap": overlap,
            "own": (tokens, overlap) == own,
            "default": (tokens, overlap) in defaults,
        }
        for tokens, overlap in offered
    ]


def _grid_from_form(post) -> dict:
    """The form's fields as the grid the API takes (sweep.clean_grid checks it)."""
    listed = lambda name: post.get(name, "").replace(",", " ").split()
    return {
        "chunk": [value.split(":", 1) if ":" in value else [value, ""] for value in post.getlist("chunk")],
        "fusion_weight": listed("fusion_weight"),
        "collapse_duplicates": [value == "on" for value in post.getlist("collapse_duplicates")],
        "rerank": [value == "on" for value in post.getlist("rerank")],
        "k": listed("k"),
    }


@login_required
@require_http_methods(["GET", "POST"])
def sweep_new(request, knowledge_base_id, test_id):
    """ "Tune retrieval" beside a test (its base's owner): the grid, prefilled, and the budget; the
    test's earlier sweeps."""
    knowledge_base = _knowledge_base_or_404(request, knowledge_base_id)
    test = _test_or_404(knowledge_base, test_id)
    _require_sweep_owner(request, knowledge_base)
    chunks, defaults = _chunk_choices(knowledge_base), sweep.default_grid(knowledge_base)
    values = {
        "chunk": [choice["value"] for choice in chunks if choice["default"]],
        "fusion_weight": ", ".join(f"{weight:g}" for weight in defaults["fusion_weight"]),
        "collapse_duplicates": ["on", "off"],
        "rerank": ["on" if rerank else "off" for rerank in defaults["rerank"]],
        "k": "",
        "minutes": str(sweep.DEFAULT_MINUTES),
    }
    errors = {}
    if request.method == "POST":
        values = {
            "chunk": request.POST.getlist("chunk"),
            "fusion_weight": request.POST.get("fusion_weight", ""),
            "collapse_duplicates": request.POST.getlist("collapse_duplicates"),
            "rerank": request.POST.getlist("rerank"),
            "k": request.POST.get("k", ""),
            "minutes": request.POST.get("minutes", ""),
        }
        try:
            started = sweep.sweep_create(
                user=request.user,
                knowledge_base=knowledge_base,
                test=test,
                grid=_grid_from_form(request.POST),
                minutes=values["minutes"],
            )
        except StudioError as exc:
            field = exc.field.removeprefix("grid.").split("[")[0].split(" ")[0]
            errors[field if field in values else "form"] = exc.message
        else:
            return redirect("knowledge:sweep", knowledge_base_id=knowledge_base.pk, sweep_id=started.pk)
    return render(
        request,
        "knowledge/sweep_new.html",
        {
            "knowledge_base": knowledge_base,
            "test": test,
            "chunks": chunks,
            "values": values,
            "errors": errors,
            "reranker": engines.reranker_configured(),
            "fusion_weight": f"{knowledge_base.fusion_weight:g}",
            "earlier": test.sweeps.all()[:10],
            "limits": {"settings": sweep.MAX_SETTINGS, "chunks": sweep.MAX_CHUNK_SETTINGS},
            "minutes": {"low": sweep.MIN_MINUTES, "high": sweep.MAX_MINUTES},
        },
        status=400 if errors else 200,
    )


def _recall(row: dict, k: int):
    return row.get(f"recall_at_{k}") if k in (1, 5, 10) else (row.get("recall_at_k") or {}).get(str(k))


def _sweep_context(request, knowledge_base, tuning_sweep, **extra) -> dict:
    ks = sorted({1, 5, 10, *tuning_sweep.grid.get("k", [])})  # a column per k, in order
    rows = [
        {
            "index": index,
            "row": row,
            "in_use": sweep.in_use(row, knowledge_base),
            "best": index == tuning_sweep.best_row,
            "applied": index == tuning_sweep.applied_row,
            "recalls": [(k, _recall(row, k)) for k in ks],
            "fusion_weight": f"{row['fusion_weight']:g}",  # 0.85, 1: as the grid was asked
        }
        for index, row in enumerate(tuning_sweep.rows)
    ]
    return {
        "knowledge_base": knowledge_base,
        "sweep": tuning_sweep,
        "rows": rows,
        "ks": ks,
        "is_owner": knowledge_base.owner_id == request.user.pk,
        **extra,
    }


@login_required
@require_GET
def sweep_page(request, knowledge_base_id, sweep_id):
    """A sweep's progress (the partial polls itself every 2 s while it runs) and its table."""
    knowledge_base = _knowledge_base_or_404(request, knowledge_base_id)
    tuning_sweep = _sweep_or_404(knowledge_base, sweep_id)
    template = "knowledge/_sweep.html" if request.htmx else "knowledge/sweep.html"
    return render(request, template, _sweep_context(request, knowledge_base, tuning_sweep))


@login_required
@require_POST
def sweep_cancel(request, knowledge_base_id, sweep_id):
    knowledge_base = _knowledge_base_or_404(request, knowledge_base_id)
    tuning_sweep = _sweep_or_404(knowledge_base, sweep_id)
    _require_sweep_owner(request, knowledge_base)
    sweep.sweep_cancel(user=request.user, sweep=tuning_sweep)
    if not request.htmx:
        return redirect("knowledge:sweep", knowledge_base_id=knowledge_base.pk, sweep_id=tuning_sweep.pk)
    return render(request, "knowledge/_sweep.html", _sweep_context(request, knowledge_base, tuning_sweep))


@login_required
@require_POST
def sweep_apply(request, knowledge_base_id, sweep_id):
    """ "Use this setting" (the base's owner): the row's ranking settings, and a rebuild when its chunk
    setting is not the base's; the table says which, or why not."""
    knowledge_base = _knowledge_base_or_404(request, knowledge_base_id)
    tuning_sweep = _sweep_or_404(knowledge_base, sweep_id)
    _require_sweep_owner(request, knowledge_base)
    error, rebuild = "", None
    try:
        rebuild = sweep.sweep_apply(user=request.user, sweep=tuning_sweep, row=request.POST.get("row"))
    except StudioError as exc:
        error = exc.message
    knowledge_base.refresh_from_db()
    context = _sweep_context(request, knowledge_base, tuning_sweep, error=error, rebuild=rebuild)
    status = 400 if error else 200
    if not request.htmx and not error:
        return redirect("knowledge:sweep", knowledge_base_id=knowledge_base.pk, sweep_id=tuning_sweep.pk)
    return render(request, "knowledge/_sweep.html" if request.htmx else "knowledge/sweep.html", context, status=status)

"""HTTP API for knowledge bases (Bearer tokens, JSON; documents arrive as multipart): create a base,
upload documents, follow their ingestion, search, rebuild with new settings, measure retrieval on
test sets, tune it with a sweep. Routes and answers are in README.md."""

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import JsonResponse
from django.http.multipartparser import MultiPartParserError

from accounts.api import api_endpoint
from studio.errors import StudioError
from studio.input_checks import parse_json

from . import retrieval_tests, selectors, services, sweep
from . import search as knowledge_search

KNOWLEDGE_BASE_SHAPE = (
    'Send a JSON object: {"name": "Handbook", "description": "...", "shared": false, "embedding_model": '
    '"all-MiniLM-L6-v2"}.'
)
SEARCH_SHAPE = 'Send a JSON object: {"query": "how do I reset it?", "k": 5, "mode": "hybrid"}.'
RANKING_SHAPE = (
    'Send a JSON object: {"fusion_weight": 0.7, "collapse_duplicates": true, "rerank": false, "expand_query": false}.'
)
REBUILD_SHAPE = 'Send a JSON object: {"chunk_tokens": 200, "chunk_overlap": 30}.'
SWEEP_SHAPE = (
    'Send a JSON object: {"retrieval_test": 3, "grid": {"chunk": [[128, 24], [200, 30]], "fusion_weight": [0, 0.5, 1], '
    '"collapse_duplicates": [true, false], "rerank": [false]}, "minutes": 20} (no "grid": the default one).'
)
RETRIEVAL_TEST_SHAPE = (
    'Send a JSON object {"name": "Support questions", "questions": [{"question": "...", "passages": ["..."]}]} '
    '(or {"name", "from_cases": true}), or a multipart "file" (JSONL or CSV) and "name".'
)


def knowledge_base_json(knowledge_base) -> dict:
    return {
        "id": knowledge_base.pk,
        "name": knowledge_base.name,
        "description": knowledge_base.description,
        "shared": knowledge_base.shared,
        "owner": knowledge_base.owner.get_username(),
        "embedding_model": knowledge_base.embedding_model,
        "dimension": knowledge_base.dimension,
        "chunk_tokens": knowledge_base.chunk_tokens,
        "chunk_overlap": knowledge_base.chunk_overlap,
        "rebuilding": knowledge_base.rebuilding,
        "ranking": ranking_json(knowledge_base),
    }


def ranking_json(knowledge_base) -> dict:
    return {name: getattr(knowledge_base, name) for name in services.RANKING_FIELDS}


def rebuild_json(knowledge_base) -> dict:
    return {
        "id": knowledge_base.pk,
        "embedding_model": knowledge_base.embedding_model,
        "chunk_tokens": knowledge_base.chunk_tokens,
        "chunk_overlap": knowledge_base.chunk_overlap,
        "rebuild": knowledge_base.rebuild_progress(),
    }


@api_endpoint("GET", "POST", json_body=True)
def knowledge_bases(request, user, body):
    if request.method == "GET":
        return JsonResponse(
            {"knowledge_bases": [knowledge_base_json(kb) for kb in selectors.knowledge_bases_for(user=user)]}
        )
    if not isinstance(body, dict):
        raise StudioError(KNOWLEDGE_BASE_SHAPE)
    knowledge_base = services.knowledge_base_create(
        owner=user,
        name=body.get("name"),
        description=body.get("description", ""),
        shared=body.get("shared", False),
        embedding_model=body.get("embedding_model"),
        chunk_tokens=body.get("chunk_tokens"),
        chunk_overlap=body.get("chunk_overlap"),
        ranking={name: body.get(name) for name in services.RANKING_FIELDS},
    )
    return JsonResponse({"id": knowledge_base.pk}, status=201)


@api_endpoint("GET", "POST", json_body=True)
def ranking(request, user, body, knowledge_base_id):
    """GET: how searches of the base rank (no rebuild needed to change it); POST (its owner): change
    some of it, {"fusion_weight": 0.7, "collapse_duplicates": true, "rerank": false, "expand_query": false}."""
    knowledge_base = selectors.knowledge_base_for(user=user, knowledge_base_id=knowledge_base_id)
    if request.method == "POST":
        if not isinstance(body, dict):
            raise StudioError(RANKING_SHAPE)
        services.knowledge_base_ranking_update(user=user, knowledge_base=knowledge_base, **body)
    return JsonResponse({"id": knowledge_base.pk, **ranking_json(knowledge_base)})


@api_endpoint("POST")
def documents(request, user, knowledge_base_id):
    knowledge_base = selectors.knowledge_base_for(user=user, knowledge_base_id=knowledge_base_id)
    services.require_owner(knowledge_base, user)  # before the body is parsed: a stranger's upload is not stored
    try:
        uploads = request.FILES.getlist("file")
    except RequestDataTooBig as exc:
        raise StudioError(str(exc), status=413) from None
    except (MultiPartParserError, SuspiciousOperation) as exc:  # too many files, a broken body
        raise StudioError(f"The upload could not be read: {exc}") from None
    added = services.documents_add(user=user, knowledge_base=knowledge_base, files=uploads)
    return JsonResponse(
        {
            "ids": [item.document.pk for item in added],
            "duplicates": [item.document.pk for item in added if item.duplicate],
        },
        status=202,
    )


@api_endpoint("GET", "DELETE")
def document_detail(request, user, knowledge_base_id, document_id):
    knowledge_base = selectors.knowledge_base_for(user=user, knowledge_base_id=knowledge_base_id)
    document = selectors.document_for(knowledge_base=knowledge_base, document_id=document_id)
    if request.method == "DELETE":
        services.document_delete(user=user, document=document)
        return JsonResponse({"id": document_id, "deleted": True})
    return JsonResponse(document.to_dict())


@api_endpoint("POST")
def document_cancel(request, user, knowledge_base_id, document_id):
    knowledge_base = selectors.knowledge_base_for(user=user, knowledge_base_id=knowledge_base_id)
    document = selectors.document_for(knowledge_base=knowledge_base, document_id=document_id)
    services.document_cancel(user=user, document=document)
    return JsonResponse({"id": document.pk, "status": document.status, "error": document.error})


@api_endpoint("POST", json_body=True)
def search(request, user, body, knowledge_base_id):
    knowledge_base = selectors.knowledge_base_for(user=user, knowledge_base_id=knowledge_base_id)
    if not isinstance(body, dict):
        raise StudioError(SEARCH_SHAPE)
    k, min_score = body.get("k", knowledge_search.DEFAULT_K), body.get("min_score")
    if isinstance(k, bool) or not isinstance(k, int):
        raise StudioError("must be a whole number", "k")
    if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))):
        raise StudioError("must be a number", "min_score")
    answer = knowledge_search.search(
        user=user,
        knowledge_base=knowledge_base,
        query=body.get("query"),
        k=k,
        mode=body.get("mode", "hybrid"),
        min_score=min_score,
        **search_ranking(body),
    )
    response = {
        "results": [hit.to_dict() for hit in answer.hits],
        "mode": answer.mode,
        "k": answer.k,
        "ranking": answer.ranking,
        "notes": answer.notes,
    }
    if answer.expansion is not None:
        response["expansion"] = answer.expansion.to_dict()
    if answer.clamped:
        response["clamped"] = answer.clamped
    return JsonResponse(response)


def search_ranking(body: dict) -> dict:
    """A search's own ranking settings, to try one without changing the base."""
    fusion_weight = body.get("fusion_weight")
    if fusion_weight is not None and (
        isinstance(fusion_weight, bool) or not isinstance(fusion_weight, (int, float)) or not 0 <= fusion_weight <= 1
    ):
        raise StudioError("must be a number from 0 to 1", "fusion_weight")
    chosen = {"fusion_weight": fusion_weight}
    for name in ("collapse_duplicates", "rerank", "expand_query"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise StudioError("must be true or false", name)
        chosen[name] = body.get(name)
    return chosen


@api_endpoint("GET", "POST", json_body=True)
def rebuild(request, user, body, knowledge_base_id):
    """POST: index every document again with new settings, in the background (the current index
    answers until the switch); GET: the settings in use and the rebuild's progress."""
    knowledge_base = selectors.knowledge_base_for(user=user, knowledge_base_id=knowledge_base_id)
    if request.method == "GET":
        return JsonResponse(rebuild_json(knowledge_base))
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise StudioError(REBUILD_SHAPE)
    queued = services.knowledge_base_rebuild(
        user=user,
        knowledge_base=knowledge_base,
        chunk_tokens=body.get("chunk_tokens"),
        chunk_overlap=body.get("chunk_overlap"),
        embedding_model=body.get("embedding_model"),
    )
    knowledge_base.refresh_from_db()
    return JsonResponse({**rebuild_json(knowledge_base), "queued": queued}, status=202)


@api_endpoint("POST")
def rebuild_cancel(request, user, knowledge_base_id):
    """Stop the rebuild (its owner): the index in use stays as it was. 409 when none is running."""
    knowledge_base = selectors.knowledge_base_for(user=user, knowledge_base_id=knowledge_base_id)
    services.knowledge_base_rebuild_cancel(user=user, knowledge_base=knowledge_base)
    return JsonResponse(rebuild_json(knowledge_base))


def retrieval_test_summary(test, version: dict) -> dict:
    """A test in its base's list: its last figures, and whether they hold for the base now."""
    figures = test.figures or {}
    job = getattr(test, "measurement", None)
    return {
        "id": test.pk,
        "name": test.name,
        "source": test.source,
        "questions": test.question_count,
        **{key: figures.get(key) for key in retrieval_tests.FIGURES},
        "measured_at": test.measured_at.isoformat() if test.measured_at else None,
        "current": test.measured_version == version,
        "measuring": job is not None and job.active,
    }


def retrieval_test_json(test, state) -> dict:
    """A test with its figures and each question's result (the last measurement's: while
    `"status": "measuring"` they are those of `settings`, before the base changed)."""
    figures = test.figures or {}
    knowledge_base = test.knowledge_base
    measured = test.measured_version or {key: getattr(knowledge_base, key) for key in retrieval_tests.SETTINGS}
    answer = {
        "id": test.pk,
        "name": test.name,
        "knowledge_base": knowledge_base.pk,
        "source": test.source,
        "questions": test.question_count,
        "status": state.status,
        "settings": {key: measured.get(key) for key in retrieval_tests.SETTINGS},
        **{key: figures.get(key) for key in retrieval_tests.FIGURES},
        "measured_at": test.measured_at.isoformat() if test.measured_at else None,
        "results": [
            {
                "question": question.question,
                "passages": question.passages,
                "rank": question.rank,
                "passage_not_in_base": question.passage_not_in_base,
                "matched": question.matched or None,
            }
            for question in test.questions.order_by("ordinal")
        ],
    }
    if state.status == "measuring":
        answer["progress"] = {"done": state.job.done, "total": state.job.total or test.question_count}
    if state.error:
        answer["error"] = state.error
    return answer


@api_endpoint("GET", "POST")
def retrieval_test_list(request, user, knowledge_base_id):
    """GET: the base's tests; POST (its owner): a new one, from JSON questions, a JSONL or CSV file
    (multipart), or the judged failure cases ({"from_cases": true})."""
    knowledge_base = selectors.knowledge_base_for(user=user, knowledge_base_id=knowledge_base_id)
    if request.method == "GET":
        version = retrieval_tests.version_of(knowledge_base)
        tests = selectors.retrieval_tests_of(knowledge_base=knowledge_base)
        return JsonResponse({"retrieval_tests": [retrieval_test_summary(test, version) for test in tests]})
    retrieval_tests.require_tests_owner(knowledge_base, user)  # before the body is read
    if request.content_type == "multipart/form-data":
        try:
            upload, name = request.FILES.get("file"), request.POST.get("name", "")
        except RequestDataTooBig as exc:
            raise StudioError(str(exc), status=413) from None
        except (MultiPartParserError, SuspiciousOperation) as exc:
            raise StudioError(f"The upload could not be read: {exc}") from None
        test = retrieval_tests.retrieval_test_import(user=user, knowledge_base=knowledge_base, name=name, upload=upload)
    else:
        body = parse_json(request.body or b"null")
        if not isinstance(body, dict):
            raise StudioError(RETRIEVAL_TEST_SHAPE)
        if body.get("from_cases") is True:
            test = retrieval_tests.retrieval_test_from_cases(
                user=user, knowledge_base=knowledge_base, name=body.get("name") or "", prompt=body.get("prompt")
            )
        else:
            test = retrieval_tests.retrieval_test_create(
                user=user, knowledge_base=knowledge_base, name=body.get("name"), questions=body.get("questions")
            )
    return JsonResponse({"id": test.pk, "questions": test.question_count}, status=201)


@api_endpoint("GET", "DELETE")
def retrieval_test_detail(request, user, knowledge_base_id, test_id):
    """GET: the figures for the base as it is now (measured first when they are stale: in the
    request for a small test, else `"status": "measuring"` with its progress)."""
    knowledge_base = selectors.knowledge_base_for(user=user, knowledge_base_id=knowledge_base_id)
    test = selectors.retrieval_test_for(knowledge_base=knowledge_base, test_id=test_id)
    if request.method == "DELETE":
        retrieval_tests.retrieval_test_delete(user=user, test=test)
        return JsonResponse({"id": test_id, "deleted": True})
    state = retrieval_tests.retrieval_test_state(test, user=user)
    return JsonResponse(retrieval_test_json(test, state))


@api_endpoint("POST")
def retrieval_test_measure(request, user, knowledge_base_id, test_id):
    """Measure again (its base's owner), whether or not the figures are stale."""
    knowledge_base = selectors.knowledge_base_for(user=user, knowledge_base_id=knowledge_base_id)
    test = selectors.retrieval_test_for(knowledge_base=knowledge_base, test_id=test_id)
    state = retrieval_tests.retrieval_test_measure(user=user, test=test)
    return JsonResponse(retrieval_test_json(test, state), status=202 if state.status == "measuring" else 200)


def sweep_json(tuning_sweep) -> dict:
    """A sweep: its progress, every setting's row (its figures once measured), the best row."""
    knowledge_base = tuning_sweep.knowledge_base
    return {
        "id": tuning_sweep.pk,
        "knowledge_base": knowledge_base.pk,
        "retrieval_test": tuning_sweep.test_id,
        "status": tuning_sweep.status,
        "grid": tuning_sweep.grid,
        "minutes": tuning_sweep.minutes,
        "progress": {"done": tuning_sweep.done, "total": tuning_sweep.total, "note": tuning_sweep.note},
        "rows": [{**row, "in_use": sweep.in_use(row, knowledge_base)} for row in tuning_sweep.rows],
        "best": tuning_sweep.best,
        "best_row": tuning_sweep.best_row,
        "applied_row": tuning_sweep.applied_row,
        "error": tuning_sweep.error,
        "created_at": tuning_sweep.created_at.isoformat(),
        "elapsed_s": tuning_sweep.progress_dict()["elapsed_s"],
    }


@api_endpoint("GET", "POST", json_body=True)
def sweep_list(request, user, body, knowledge_base_id):
    """GET: the base's sweeps, newest first; POST (its owner): start one."""
    knowledge_base = selectors.knowledge_base_for(user=user, knowledge_base_id=knowledge_base_id)
    if request.method == "GET":
        sweeps = selectors.sweeps_of(knowledge_base=knowledge_base)
        return JsonResponse({"sweeps": [sweep_json(tuning_sweep) for tuning_sweep in sweeps]})
    if not isinstance(body, dict):
        raise StudioError(SWEEP_SHAPE)
    sweep.require_sweep_owner(knowledge_base, user)
    test_id = body.get("retrieval_test")
    if isinstance(test_id, bool) or not isinstance(test_id, int):
        raise StudioError("must be the id of one of this knowledge base's retrieval tests", "retrieval_test")
    test = selectors.retrieval_test_for(knowledge_base=knowledge_base, test_id=test_id)
    created = sweep.sweep_create(
        user=user, knowledge_base=knowledge_base, test=test, grid=body.get("grid"), minutes=body.get("minutes")
    )
    return JsonResponse({"id": created.pk, "settings": created.total}, status=201)


@api_endpoint("GET")
def sweep_detail(request, user, knowledge_base_id, sweep_id):
    knowledge_base = selectors.knowledge_base_for(user=user, knowledge_base_id=knowledge_base_id)
    return JsonResponse(sweep_json(selectors.sweep_for(knowledge_base=knowledge_base, sweep_id=sweep_id)))


@api_endpoint("POST")
def sweep_cancel(request, user, knowledge_base_id, sweep_id):
    """Stop it (the base's owner): a queued one at once, a running one at its next step."""
    knowledge_base = selectors.knowledge_base_for(user=user, knowledge_base_id=knowledge_base_id)
    tuning_sweep = selectors.sweep_for(knowledge_base=knowledge_base, sweep_id=sweep_id)
    sweep.sweep_cancel(user=user, sweep=tuning_sweep)
    return JsonResponse(sweep_json(tuning_sweep))


@api_endpoint("POST", json_body=True)
def sweep_apply(request, user, body, knowledge_base_id, sweep_id):
    """{"row": index} (the base's owner): that setting on the base; a rebuild when its chunk setting differs."""
    knowledge_base = selectors.knowledge_base_for(user=user, knowledge_base_id=knowledge_base_id)
    tuning_sweep = selectors.sweep_for(knowledge_base=knowledge_base, sweep_id=sweep_id)
    if not isinstance(body, dict):
        raise StudioError('Send a JSON object: {"row": 0} (the index of a row in the sweep\'s "rows").')
    sweep.require_sweep_owner(knowledge_base, user)
    rebuild = sweep.sweep_apply(user=user, sweep=tuning_sweep, row=body.get("row"))
    return JsonResponse({"id": tuning_sweep.pk, "row": tuning_sweep.applied_row, "rebuild": rebuild}, status=202)

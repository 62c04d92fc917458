"""HTTP API for knowledge bases (Bearer tokens, JSON; documents arrive as multipart): create a base,
upload documents, follow their ingestion, search, rebuild with new settings. Routes and answers are in README.md."""

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import JsonResponse
from django.http.multipartparser import MultiPartParserError

from accounts.api import api_endpoint
from studio.errors import StudioError

from . import search as knowledge_search
from . import selectors, services

KNOWLEDGE_BASE_SHAPE = 'Send a JSON object: {"name": "Handbook", "description": "...", "shared": false}.'
SEARCH_SHAPE = 'Send a JSON object: {"query": "how do I reset it?", "k": 5, "mode": "hybrid"}.'
REBUILD_SHAPE = 'Send a JSON object: {"chunk_tokens": 200, "chunk_overlap": 30}.'


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
    }


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
        owner=user, name=body.get("name"), description=body.get("description", ""), shared=body.get("shared", False)
    )
    return JsonResponse({"id": knowledge_base.pk}, status=201)


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
    )
    response = {"results": [hit.to_dict() for hit in answer.hits], "mode": answer.mode, "k": answer.k}
    if answer.clamped:
        response["clamped"] = answer.clamped
    return JsonResponse(response)


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

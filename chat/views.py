import json

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from knowledge import selectors as knowledge_selectors
from knowledge.retrieval import document_tokens
from knowledge.search import MODES as SEARCH_MODES
from studio.input_checks import whole_number_or_none
from studio.middleware import error_response

from . import exchange, search, selectors, services
from .forms import SearchForm
from .models import Message
from .retrieval import RetrievalError, settings_in_effect
from .sampling import (
    SAMPLING_FIELDS,
    SamplingError,
    sampling_form_fields,
    sampling_in_effect,
    sampling_summary,
    user_defaults,
)
from .serving import registry

MESSAGES_PER_PAGE = 50  # of the active branch, newest first; older ones load as the person scrolls up


def _own_conversation_or_404(request, conversation_id):
    conversation = selectors.conversation_for(user=request.user, conversation_id=conversation_id)
    if conversation is None:
        raise Http404("No such conversation.")  # someone else's looks the same as none
    return conversation


@login_required
@require_GET
def conversation_list(request):
    return render(
        request,
        "chat/conversation_list.html",
        {
            "conversations": selectors.conversations_page(user=request.user, kind=request.GET.get("kind", "chat")),
            "workers": registry.workers_online(),
        },
    )


@login_required
@require_GET
def conversation_list_page(request):
    """Older conversations for the sidebar ("Older conversations…")."""
    return render(
        request,
        "chat/_conversation_items.html",
        {
            "conversations": selectors.conversations_page(
                user=request.user,
                page=request.GET.get("page"),
                current_id=whole_number_or_none(request.GET.get("current")),
                kind=request.GET.get("kind", "chat"),
            ),
            "conversation": {"pk": whole_number_or_none(request.GET.get("current"))},
        },
    )


@login_required
@require_POST
def conversation_new(request):
    conversation = services.conversation_create(owner=request.user)
    return redirect(conversation)


@login_required
@require_GET
def conversation_detail(request, conversation_id):
    conversation = _own_conversation_or_404(request, conversation_id)
    messages, branches = selectors.active_messages(conversation=conversation)
    shown = selectors.with_side_replies(selectors.with_siblings(messages[-MESSAGES_PER_PAGE:], branches), branches)
    return render(
        request,
        "chat/conversation_detail.html",
        {
            "conversation": conversation,
            "conversations": selectors.conversations_page(
                user=request.user, current_id=conversation.pk, kind=request.GET.get("kind", _sidebar_kind(conversation))
            ),
            "chat_messages": shown,
            "earlier": len(messages) > len(shown),
            "workers": registry.workers_online(),
            "models": registry.available_models(),
            "sampling_summary": sampling_summary(sampling_in_effect(conversation)),
            **_knowledge_context(request, conversation),
        },
    )


@login_required
@require_GET
def conversation_history(request, conversation_id):
    """The active branch's messages above `before`, a page at a time (loaded as the person scrolls up)."""
    conversation = _own_conversation_or_404(request, conversation_id)
    branches = selectors.Branches.of(conversation)
    path = branches.active_path()
    before = whole_number_or_none(request.GET.get("before"))
    if before is not None and before not in path:
        end = 0  # the branch changed since the page asked: nothing above it to add (the page reloads it)
    else:
        end = path.index(before) if before is not None else len(path)
    ids = path[max(0, end - MESSAGES_PER_PAGE) : end]
    messages = selectors.with_side_replies(
        selectors.with_siblings(selectors.messages_of(conversation=conversation, ids=ids), branches), branches
    )
    return render(
        request,
        "chat/_history_page.html",
        {"conversation": conversation, "chat_messages": messages, "earlier": end > len(ids)},
    )


@login_required
@require_POST
def conversation_rename(request, conversation_id):
    conversation = _own_conversation_or_404(request, conversation_id)
    title = request.POST.get("title", "")
    try:
        services.conversation_update(conversation=conversation, title=title)
    except services.ChatError as exc:
        conversation.refresh_from_db()
        return render(
            request, "chat/_title.html", {"conversation": conversation, "error": str(exc), "title_value": title}
        )
    # The sidebar lists the title too: it is swapped out of band with the form.
    return render(
        request,
        "chat/_title.html",
        {
            "conversation": conversation,
            "renamed": True,
            "conversations": selectors.conversations_page(
                user=request.user, current_id=conversation.pk, kind=conversation.kind
            ),
        },
    )


@login_required
@require_POST
def conversation_system_prompt(request, conversation_id):
    conversation = _own_conversation_or_404(request, conversation_id)
    system_prompt = request.POST.get("system_prompt", "")
    error = ""
    try:
        services.conversation_update(conversation=conversation, system_prompt=system_prompt)
    except services.ChatError as exc:
        error = str(exc)
    return render(
        request,
        "chat/_system_prompt.html",
        {"conversation": conversation, "error": error, "saved": not error, "system_prompt_value": system_prompt},
    )


@login_required
@require_http_methods(["GET", "POST"])
def conversation_model(request, conversation_id):
    """The model picker: which model this conversation's next replies come from (POST); polled
    (GET) so that a model fine-tuned meanwhile appears without a reload (204 while nothing changed)."""
    conversation = _own_conversation_or_404(request, conversation_id)
    if request.method == "GET":
        models = registry.available_models()
        if request.GET.get("known") == "|".join(models):
            return HttpResponse(status=204)
        return render(request, "chat/_model_picker.html", {"conversation": conversation, "models": models})
    error = ""
    try:
        services.conversation_choose_model(conversation=conversation, model_name=request.POST.get("model", ""))
    except services.ChatError as exc:
        error = str(exc)
    return render(
        request,
        "chat/_model_picker.html",
        {"conversation": conversation, "error": error, "models": registry.available_models()},
        status=400 if error else 200,
    )


def _as_typed(request) -> dict:
    """A refused form's values as the person typed them (shown again beside the error)."""
    typed = {name: request.POST.get(name, "")[:200] for name in (*SAMPLING_FIELDS, "stop")}
    typed["stop"] = [line for line in typed["stop"].splitlines() if line.strip()]
    return typed


def _sampling_panel(request, conversation, *, error=None, saved=False):
    stored = _as_typed(request) if error else (conversation.parameters or {})
    effect = sampling_in_effect(conversation)
    return render(
        request,
        "chat/_sampling.html",
        {
            "conversation": conversation,
            "saved": saved,
            "error": str(error or ""),
            "error_field": getattr(error, "field", ""),
            "sampling_summary": sampling_summary(effect),
            "sampling_fields": sampling_form_fields(stored, effect),
        },
        status=400 if error else 200,
    )


@login_required
@require_http_methods(["GET", "POST"])
def conversation_sampling(request, conversation_id):
    """The chat's sampling panel: its own settings, and what applies (chat over prompt over yours
    over the studio's)."""
    conversation = _own_conversation_or_404(request, conversation_id)
    if request.method == "GET":
        return _sampling_panel(request, conversation)
    try:
        services.conversation_set_sampling(conversation=conversation, values=request.POST)
    except SamplingError as exc:
        return _sampling_panel(request, conversation, error=exc)
    return _sampling_panel(request, conversation, saved=True)


@login_required
@require_http_methods(["GET", "POST"])
def chat_defaults(request):
    """The person's own sampling defaults (shown on the settings page)."""
    error, saved = None, False
    if request.method == "POST":
        try:
            services.chat_defaults_set(user=request.user, values=request.POST)
            saved = True
        except SamplingError as exc:
            error = exc
    stored = _as_typed(request) if error else user_defaults(request.user)
    return render(
        request,
        "chat/_sampling.html",
        {
            "defaults_form": True,
            "saved": saved,
            "error": str(error or ""),
            "error_field": getattr(error, "field", ""),
            "sampling_fields": sampling_form_fields(stored),
        },
        status=400 if error else 200,
    )


@login_required
@require_POST
def message_feedback(request, conversation_id, message_id):
    """Thumbs up or down on a reply (the page then opens the failure-case form for a thumbs down)."""
    conversation = _own_conversation_or_404(request, conversation_id)
    message = get_object_or_404(Message, conversation=conversation, pk=message_id)
    try:
        services.reply_feedback(message=message, value=request.POST.get("value", ""))
    except services.ChatError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
    return HttpResponse(status=204)


@login_required
@require_POST
def conversation_delete(request, conversation_id):
    conversation = _own_conversation_or_404(request, conversation_id)
    services.conversation_delete(conversation=conversation)
    if request.htmx:
        return HttpResponseClientRedirect("/chat/")
    return redirect("chat:list")


@login_required
@require_GET
def message_detail(request, conversation_id, message_id):
    """One message rendered (Markdown, figures): the chat swaps it in when a reply ends."""
    conversation = _own_conversation_or_404(request, conversation_id)
    message = get_object_or_404(Message, conversation=conversation, pk=message_id)
    selectors.with_siblings([message], selectors.Branches.of(conversation))
    return render(request, "chat/_message.html", {"message": message})


@login_required
@require_GET
def model_status(request):
    return render(request, "chat/_model_status.html", {"workers": registry.workers_online()})


# --- export and import (chat/exchange.py) ---------------------------------------------------------


@login_required
@require_GET
def conversation_export(request, conversation_id):
    """The conversation as a file: ?format=json (every branch) or markdown (the active branch)."""
    conversation = _own_conversation_or_404(request, conversation_id)
    kind = request.GET.get("format", "json")
    if kind not in exchange.EXPORT_FORMATS:
        return error_response(request, 400, f"There is no export format “{kind[:40]}”: ask for json or markdown.")
    content_type, extension = exchange.EXPORT_FORMATS[kind]
    if kind == "json":
        body = json.dumps(exchange.conversation_export_json(conversation), ensure_ascii=False, indent=2)
    else:
        body = exchange.conversation_export_markdown(conversation)
    response = HttpResponse(body, content_type=content_type)
    filename = slugify(conversation.title) or "conversation"
    response["Content-Disposition"] = f'attachment; filename="{filename}.{extension}"'
    return response


@login_required
@require_http_methods(["GET", "POST"])
def conversation_import(request):
    """A file of conversations (an export of ours, ChatGPT's conversations.json) becomes new
    conversations of the person, and the first one opens; a refused file shows the form again,
    saying where in the file the problem is (400)."""
    error = ""
    if request.method == "POST":
        upload = request.FILES.get("file")
        try:
            if upload is None:
                raise exchange.ImportRefused("Choose a file to import.")
            imported = exchange.conversations_import(owner=request.user, upload=upload)
        except exchange.ImportRefused as exc:
            error = f"Nothing was imported. {exc}"
        else:
            first = imported[0].get_absolute_url()
            return HttpResponseClientRedirect(first) if request.htmx else redirect(first)
    return render(
        request,
        "chat/_import_form.html" if request.htmx else "chat/conversation_import.html",
        {
            "error": error,
            "max_bytes": settings.CHAT_IMPORT_MAX_BYTES,
            "max_conversations": f"{exchange.MAX_CONVERSATIONS:,}",
            "max_messages": f"{exchange.MAX_MESSAGES:,}",
        },
        status=400 if error else 200,
    )


def _sidebar_kind(conversation) -> str:
    """The sidebar list a conversation is in: its kind's, or Archived."""
    return selectors.ARCHIVED if conversation.archived_at else conversation.kind


@login_required
@require_GET
def conversation_search(request):
    """Search one's conversations: the page; for htmx the results, in the sidebar's list (or the
    list itself again once the sidebar's box is emptied)."""
    form = SearchForm(request.GET)
    arguments = form.search_arguments()
    context = {
        "form": form,
        "hits": search.conversations_search(user=request.user, **arguments),
        "searched": search.searches_anything(**arguments),
        "limit": search.RESULTS_LIMIT,
    }
    if request.htmx and request.htmx.target == "conversation-list":
        if not context["searched"]:
            current = whole_number_or_none(request.GET.get("current"))
            return render(
                request,
                "chat/_conversation_list.html",
                {
                    "conversations": selectors.conversations_page(
                        user=request.user, current_id=current, kind=request.GET.get("kind", "chat")
                    ),
                    "conversation": {"pk": current},
                },
            )
        return render(request, "chat/_search_sidebar.html", context)
    if request.htmx and not request.htmx.history_restore_request:
        return render(request, "chat/_search_results.html", context)
    return render(
        request,
        "chat/search.html",
        {
            **context,
            "conversations": selectors.conversations_page(user=request.user),
            "workers": registry.workers_online(),
            "models": registry.available_models(),
            "prompt_slugs": search.prompt_slugs_of(user=request.user),
        },
    )


@login_required
@require_POST
def conversation_pin(request, conversation_id):
    conversation = _own_conversation_or_404(request, conversation_id)
    services.conversation_pin(conversation=conversation, pinned=_wanted(request, "pinned", conversation.pinned_at))
    return _conversation_actions(request, conversation)


@login_required
@require_POST
def conversation_archive(request, conversation_id):
    conversation = _own_conversation_or_404(request, conversation_id)
    services.conversation_archive(
        conversation=conversation, archived=_wanted(request, "archived", conversation.archived_at)
    )
    return _conversation_actions(request, conversation)


def _wanted(request, field: str, current) -> bool:
    """The state the button asked for ("true"/"false": a double click does not undo itself); a
    POST without it toggles."""
    asked = request.POST.get(field)
    return asked == "true" if asked in ("true", "false") else current is None


def _conversation_actions(request, conversation):
    """The header's Pin and Archive buttons, and the sidebar's list swapped out of band."""
    if not request.htmx:
        return redirect(conversation)
    return render(
        request,
        "chat/_conversation_actions.html",
        {
            "conversation": conversation,
            "oob_list": True,
            "conversations": selectors.conversations_page(
                user=request.user, current_id=conversation.pk, kind=_sidebar_kind(conversation)
            ),
        },
    )


# --- knowledge attached to the chat -------------------------------------------------------


def _knowledge_panel(request, conversation, *, error=None, saved=False, status=200):
    return render(
        request,
        "chat/_knowledge.html",
        _knowledge_context(request, conversation, error=error, saved=saved),
        status=status,
    )


def _knowledge_context(request, conversation, *, error=None, saved=False) -> dict:
    """What is attached (the chat's own, and its prompt version's), and how replies search it."""
    bases = list(conversation.knowledge_bases.all())
    documents = list(conversation.documents.select_related("knowledge_base"))
    sizes = document_tokens(d.pk for d in documents)
    for document in documents:
        document.tokens = sizes.get(document.pk, 0)
        document.whole = document.status == "ready" and document.tokens <= settings.KNOWLEDGE_WHOLE_DOCUMENT_TOKENS
        document.gone = not document.knowledge_base.visible_to(request.user)
    for knowledge_base in bases:
        knowledge_base.gone = not knowledge_base.visible_to(request.user)
    version = conversation.prompt_version
    version_bases = (
        knowledge_selectors.attached_bases_seen_by(
            user=request.user, attached=(version.retrieval or {}).get("knowledge_bases")
        )
        if version is not None
        else []
    )
    typed = (
        {name: request.POST.get(name, "") for name in ("k", "mode", "min_score", "when_nothing_found")}
        if error
        else None
    )
    return {
        "conversation": conversation,
        "bases": bases,
        "documents": documents,
        "version_bases": version_bases,
        "in_effect": typed or settings_in_effect(conversation),
        "own": bool(conversation.retrieval_settings),
        "modes": SEARCH_MODES,
        "error": str(error or ""),
        "error_field": getattr(error, "field", ""),
        "saved": saved,
        "whole_limit": settings.KNOWLEDGE_WHOLE_DOCUMENT_TOKENS,
    }


@login_required
@require_http_methods(["GET", "POST"])
def conversation_knowledge(request, conversation_id):
    """The chat's knowledge panel; POST saves its retrieval settings."""
    conversation = _own_conversation_or_404(request, conversation_id)
    if request.method == "GET":
        return _knowledge_panel(request, conversation)
    try:
        services.conversation_set_retrieval(conversation=conversation, values=request.POST)
    except RetrievalError as exc:
        return _knowledge_panel(request, conversation, error=exc, status=400)
    return _knowledge_panel(request, conversation, saved=True)


def _knowledge_change(request, conversation_id, change):
    """Attach or detach (`change`: the service) what the form names; the panel, with the refusal."""
    conversation = _own_conversation_or_404(request, conversation_id)
    try:
        change(conversation=conversation, kind=request.POST.get("kind", ""), item_id=request.POST.get("id"))
    except services.ChatError as exc:
        return _knowledge_panel(request, conversation, error=exc, status=400)
    return _knowledge_panel(request, conversation)


@login_required
@require_POST
def conversation_knowledge_attach(request, conversation_id):
    return _knowledge_change(request, conversation_id, services.conversation_attach)


@login_required
@require_POST
def conversation_knowledge_detach(request, conversation_id):
    return _knowledge_change(request, conversation_id, services.conversation_detach)


@login_required
@require_GET
def conversation_knowledge_suggest(request, conversation_id):
    """Knowledge bases and documents to attach whose name holds `q` (the picker, and `#` typed in
    the message box)."""
    conversation = _own_conversation_or_404(request, conversation_id)
    bases, documents = knowledge_selectors.attachable_for(user=request.user, query=request.GET.get("q", ""))
    return render(
        request,
        "chat/_knowledge_suggestions.html",
        {
            "conversation": conversation,
            "bases": bases,
            "documents": documents,
            "composer": request.GET.get("for") == "composer",
            "query": request.GET.get("q", "")[:200],
        },
    )

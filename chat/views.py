from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from . import selectors, services
from .models import Message


def _own_conversation_or_404(request, conversation_id):
    conversation = selectors.conversation_for(user=request.user, conversation_id=conversation_id)
    if conversation is None:
        raise Http404("No such conversation.")  # someone else's looks the same as none
    return conversation


@login_required
@require_GET
def conversation_list(request):
    return render(request, "chat/conversation_list.html", {
        "conversations": selectors.conversations_page(user=request.user, kind=request.GET.get("kind", "chat")),
        "workers": selectors.workers_online(),
    })


@login_required
@require_GET
def conversation_list_page(request):
    """Older conversations for the sidebar ("Older conversations…")."""
    return render(request, "chat/_conversation_items.html", {
        "conversations": selectors.conversations_page(user=request.user, page=request.GET.get("page"),
                                                      current_id=_int_or_none(request.GET.get("current")),
                                                      kind=request.GET.get("kind", "chat")),
        "conversation": {"pk": _int_or_none(request.GET.get("current"))},
    })


@login_required
@require_POST
def conversation_new(request):
    conversation = services.conversation_create(owner=request.user)
    return redirect(conversation)


@login_required
@require_GET
def conversation_detail(request, conversation_id):
    conversation = _own_conversation_or_404(request, conversation_id)
    messages = list(selectors.messages_of(conversation=conversation))
    return render(request, "chat/conversation_detail.html", {
        "conversation": conversation,
        "conversations": selectors.conversations_page(user=request.user, current_id=conversation.pk,
                                                      kind=request.GET.get("kind", conversation.kind)),
        "chat_messages": messages,
        "last_message_id": messages[-1].pk if messages else None,
        "workers": selectors.workers_online(),
        "models": selectors.available_models(),
    })


@login_required
@require_POST
def conversation_rename(request, conversation_id):
    conversation = _own_conversation_or_404(request, conversation_id)
    title = request.POST.get("title", "")
    try:
        services.conversation_update(conversation=conversation, title=title)
    except services.ChatError as exc:
        conversation.refresh_from_db()
        return render(request, "chat/_title.html", {"conversation": conversation, "error": str(exc), "title_value": title})
    # The sidebar lists the title too: it is swapped out of band with the form.
    return render(request, "chat/_title.html", {
        "conversation": conversation, "renamed": True,
        "conversations": selectors.conversations_page(user=request.user, current_id=conversation.pk,
                                                      kind=conversation.kind)})


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
    return render(request, "chat/_system_prompt.html", {"conversation": conversation, "error": error, "saved": not error,
                                                        "system_prompt_value": system_prompt})


@login_required
@require_http_methods(["GET", "POST"])
def conversation_model(request, conversation_id):
    """The model picker: which model this conversation's next replies come from (POST); polled
    (GET) so that a model fine-tuned meanwhile appears without a reload (204 while nothing changed)."""
    conversation = _own_conversation_or_404(request, conversation_id)
    if request.method == "GET":
        models = selectors.available_models()
        if request.GET.get("known") == "|".join(models):
            return HttpResponse(status=204)
        return render(request, "chat/_model_picker.html", {"conversation": conversation, "models": models})
    error = ""
    try:
        services.conversation_choose_model(conversation=conversation, model_name=request.POST.get("model", ""))
    except services.ChatError as exc:
        error = str(exc)
    return render(request, "chat/_model_picker.html", {"conversation": conversation, "error": error,
                                                       "models": selectors.available_models()},
                  status=400 if error else 200)


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
    last_id = conversation.messages.order_by("-id").values_list("id", flat=True).first()
    return render(request, "chat/_message.html", {"message": message, "last_message_id": last_id})


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@login_required
@require_GET
def model_status(request):
    return render(request, "chat/_model_status.html", {"workers": selectors.workers_online()})


from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
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
        "conversations": selectors.conversations_for(user=request.user),
        "workers": selectors.workers_online(),
    })


@login_required
@require_POST
def conversation_new(request):
    conversation = services.conversation_create(
        owner=request.user, system_prompt=request.POST.get("system_prompt", "")
    )
    return redirect(conversation)


@login_required
@require_GET
def conversation_detail(request, conversation_id):
    conversation = _own_conversation_or_404(request, conversation_id)
    messages = list(selectors.messages_of(conversation=conversation))
    return render(request, "chat/conversation_detail.html", {
        "conversation": conversation,
        "conversations": selectors.conversations_for(user=request.user),
        "chat_messages": messages,
        "last_message_id": messages[-1].pk if messages else None,
        "workers": selectors.workers_online(),
    })


@login_required
@require_POST
def conversation_rename(request, conversation_id):
    conversation = _own_conversation_or_404(request, conversation_id)
    error = ""
    try:
        services.conversation_update(conversation=conversation, title=request.POST.get("title", ""))
    except services.ChatError as exc:
        error = str(exc)
        conversation.refresh_from_db()
    return render(request, "chat/_title.html", {"conversation": conversation, "error": error})


@login_required
@require_POST
def conversation_system_prompt(request, conversation_id):
    conversation = _own_conversation_or_404(request, conversation_id)
    error = ""
    try:
        services.conversation_update(conversation=conversation, system_prompt=request.POST.get("system_prompt", ""))
    except services.ChatError as exc:
        error = str(exc)
    return render(request, "chat/_system_prompt.html", {"conversation": conversation, "error": error, "saved": not error})


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


@login_required
@require_GET
def model_status(request):
    return render(request, "chat/_model_status.html", {"workers": selectors.workers_online()})


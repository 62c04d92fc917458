"""The prompt playground and "chat from a version": pages of the prompt library (their URLs are
under /prompts/, routed from studio/urls.py) that run chats, so they live with the chat."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from prompts import selectors as prompt_selectors
from prompts.rendering import MissingVariablesError, TemplateError
from prompts.views import (playground_input, playground_versions, prompt_or_404, union_variables, variables_from,
                           version_or_404)

from . import selectors, services
from .models import Conversation
from .wakeups import request_reply_after_commit


@login_required
@require_GET
def playground(request, slug):
    prompt = prompt_or_404(slug)
    versions = playground_versions(prompt, request.GET)
    return render(request, "prompts/playground.html", {
        "prompt": prompt, "versions": versions, **prompt_selectors.version_summary(prompt),
        "variables": union_variables(versions), "values": {}, "models": selectors.available_models(),
    })


@login_required
@require_POST
def playground_run(request, slug):
    """Each chosen version rendered with the same variables, answered by the chat's model worker."""
    versions, variables = playground_input(prompt_or_404(slug), request.POST)
    runs = []
    for version in versions:
        try:
            conversation, reply = services.conversation_start_from_prompt(
                owner=request.user, prompt_version=version, variables=variables, kind=Conversation.Kind.PLAYGROUND,
                model_name=request.POST.get("model", ""))
        except (MissingVariablesError, TemplateError, services.ChatError) as exc:
            runs.append({"version": version, "error": str(exc)})
        else:
            request_reply_after_commit()
            runs.append({"version": version, "conversation": conversation, "reply": reply,
                         "format_label": _format_label(version)})
    return render(request, "prompts/_runs.html", {"runs": runs, "base_model": selectors.base_model_name()})


@login_required
@require_POST
def chat_start(request, slug, number):
    prompt = prompt_or_404(slug)
    version = version_or_404(prompt, number=number)
    variables = variables_from(request.POST, version.variables)
    if request.POST.get("confirmed") != "1":
        # Nothing is sent before the person has seen the first message the values make (a value
        # left in the form from an earlier run would otherwise go out unseen).
        try:
            first_message = services.user_turn_from_template(prompt_version=version, variables=variables)
        except (MissingVariablesError, TemplateError, services.ChatError) as exc:
            return render(request, "prompts/_preview.html", {"previews": [{"version": version, "error": str(exc)}]},
                          status=400)
        return render(request, "prompts/_chat_start.html", {
            "prompt": prompt, "version": version, "variables": variables, "first_message": first_message,
            "model": request.POST.get("model", "")})
    try:
        conversation, reply = services.conversation_start_from_prompt(
            owner=request.user, prompt_version=version, variables=variables, model_name=request.POST.get("model", ""),
            template_every_turn=request.POST.get("later_turns") == "template")
    except (MissingVariablesError, TemplateError, services.ChatError) as exc:
        return render(request, "prompts/_preview.html", {"previews": [{"version": version, "error": str(exc)}]},
                      status=400)
    request_reply_after_commit()
    if request.htmx:
        return HttpResponseClientRedirect(conversation.get_absolute_url())
    return redirect(conversation)


def _format_label(version) -> str:
    """What the run card says of the version's output format ("" for free text)."""
    return {"json": "JSON object", "json_schema": "JSON Schema", "regex": "regular expression",
            "choice": "one of the choices"}.get(version.answer_format["type"], "")

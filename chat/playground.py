"""The prompt playground and "chat from a version": pages of the prompt library (their URLs are
under /prompts/, routed from studio/urls.py) that run chats, so they live with the chat.

A playground run is a conversation of kind `playground` (the rendered user turn and its reply),
kept like any other: the page lists the person's last runs of the prompt, and each can be opened
again, compared with another and flagged as a failure case (evals' flag form). Only the person
who ran it sees it: anyone else's is answered as one that does not exist (404)."""

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from prompts import selectors as prompt_selectors
from prompts.rendering import MissingVariablesError, TemplateError
from prompts.views import (
    playground_input,
    playground_versions,
    prompt_or_404,
    union_variables,
    variables_from,
    version_or_404,
)

from . import selectors, services
from .models import Conversation
from .serving import registry
from .serving.wakeups import request_reply_after_commit

# The event that refreshes the page's list of runs (a run started or ended; htmx `HX-Trigger`).
RUNS_CHANGED = "playground-runs-changed"


@login_required
@require_GET
def playground(request, slug):
    prompt = prompt_or_404(slug)
    versions = playground_versions(prompt, request.GET)
    return render(
        request,
        "prompts/playground.html",
        {
            "prompt": prompt,
            "versions": versions,
            **prompt_selectors.version_summary(prompt),
            "variables": union_variables(versions),
            "values": {},
            "models": registry.available_models(),
            **_run_list(request, prompt),
        },
    )


@login_required
@require_POST
def playground_preview(request, slug):
    """Each chosen version's messages exactly as a run sends them (its retrieved passages included),
    counted with the model's tokenizer."""
    versions, variables = playground_input(prompt_or_404(slug), request.POST)
    counter = prompt_selectors.prompt_counter()
    return render(
        request,
        "prompts/_preview.html",
        {"previews": [_preview(request.user, version, variables, counter) for version in versions]},
    )


def _preview(user, version, variables: dict, counter) -> dict:
    own = {name: value for name, value in variables.items() if name in version.variables}  # as a run keeps them
    try:
        messages, record = selectors.version_reply_messages(version=version, user=user, variables=own)
    except (MissingVariablesError, TemplateError) as exc:
        return {"version": version, "error": str(exc)}
    preview = {"version": version, "messages": messages, "retrieval": record}
    if counter is not None:
        tokens = counter.count(messages)
        preview.update(
            tokens=tokens,
            context_length=counter.context_length,
            too_long=tokens + version.reply_sampling.get("max_new_tokens", 0) > counter.context_length,
        )
    return preview


@login_required
@require_POST
def playground_run(request, slug):
    """Each chosen version rendered with the same variables, answered by the chat's model worker."""
    prompt = prompt_or_404(slug)
    versions, variables = playground_input(prompt, request.POST)
    runs = []
    for version in versions:
        try:
            conversation, reply = services.conversation_start_from_prompt(
                owner=request.user,
                prompt_version=version,
                variables=variables,
                kind=Conversation.Kind.PLAYGROUND,
                model_name=request.POST.get("model", ""),
            )
        except (MissingVariablesError, TemplateError, services.ChatError) as exc:
            runs.append({"version": version, "error": str(exc)})
        else:
            request_reply_after_commit()
            conversation.reply = reply
            conversation.run_messages = [reply.parent, reply]
            runs.append(_run_card(conversation))
    response = _runs(request, prompt, runs)
    if any("conversation" in run for run in runs):
        response["HX-Trigger"] = RUNS_CHANGED
    return response


@login_required
@require_GET
def playground_run_list(request, slug):
    """The person's last runs of the prompt (refreshed when one starts or ends)."""
    prompt = prompt_or_404(slug)
    return render(request, "prompts/_run_list.html", {"prompt": prompt, **_run_list(request, prompt)})


def _run_list(request, prompt) -> dict:
    run_list = selectors.playground_runs(user=request.user, prompt=prompt)
    return {
        "run_list": run_list,
        "base_model": registry.base_model_name(),
        "runs_in_progress": any(run.reply is not None and run.reply.in_progress for run in run_list),
    }


@login_required
@require_GET
def playground_run_detail(request, slug, conversation_id):
    """One run opened again: what was sent, the reply, its passages and figures; Continue and Flag."""
    prompt = prompt_or_404(slug)
    return _runs(request, prompt, [_run_card(_own_run_or_404(request, prompt, conversation_id))])


@login_required
@require_POST
def playground_tool_results(request, slug, conversation_id):
    """The results of the run's last calls, typed by the person (one `result` per call): stored as
    the run's next turn and its next reply asked (chat.services.tool_results_send); the pane again,
    its new reply streaming. Someone else's run is one that does not exist (404)."""
    prompt = prompt_or_404(slug)
    run = _own_run_or_404(request, prompt, conversation_id)
    results = request.POST.getlist("result")
    try:
        services.tool_results_send(conversation=run, results=results)
    except services.ChatError as exc:
        card = {**_run_card(run), "tool_error": str(exc), "typed_results": results}
        return _run_pane(request, prompt, card, status=400)
    request_reply_after_commit()
    response = _run_pane(request, prompt, _run_card(_own_run_or_404(request, prompt, conversation_id)))
    response["HX-Trigger"] = RUNS_CHANGED
    return response


def _run_pane(request, prompt, run: dict, status: int = 200):
    return render(
        request,
        "prompts/_run.html",
        {"prompt": prompt, "run": run, "base_model": registry.base_model_name()},
        status=status,
    )


@login_required
@require_GET
def playground_compare(request, slug):
    """Two runs side by side (the two chosen in the list)."""
    prompt = prompt_or_404(slug)
    chosen = list(dict.fromkeys(request.GET.getlist("run")))
    if len(chosen) != 2:
        return render(
            request,
            "prompts/_runs.html",
            {"compare_error": f"Choose two runs to compare ({len(chosen)} chosen)."},
            status=400,
        )
    return _runs(request, prompt, [_run_card(_own_run_or_404(request, prompt, pk)) for pk in chosen])


def _own_run_or_404(request, prompt, conversation_id) -> Conversation:
    run = selectors.playground_run(user=request.user, prompt=prompt, conversation_id=conversation_id)
    if run is None:
        raise Http404("No such run.")  # someone else's looks the same as none
    return run


def _run_card(conversation: Conversation) -> dict:
    """What a run's pane shows (prompts/_run.html)."""
    sent = [m for m in conversation.run_messages if m.role == "user"]
    return {
        "version": conversation.prompt_version,
        "conversation": conversation,
        "reply": conversation.reply,
        "sent": sent[0].content if sent else "",
        # A run continued with tools' results: its turns between what was sent and the last reply.
        "earlier": conversation.run_messages[1:-1],
        "format_label": _format_label(conversation.prompt_version),
    }


def _runs(request, prompt, runs: list[dict]):
    return render(
        request, "prompts/_runs.html", {"prompt": prompt, "runs": runs, "base_model": registry.base_model_name()}
    )


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
            return render(
                request, "prompts/_preview.html", {"previews": [{"version": version, "error": str(exc)}]}, status=400
            )
        return render(
            request,
            "prompts/_chat_start.html",
            {
                "prompt": prompt,
                "version": version,
                "variables": variables,
                "first_message": first_message,
                "model": request.POST.get("model", ""),
            },
        )
    try:
        conversation, reply = services.conversation_start_from_prompt(
            owner=request.user,
            prompt_version=version,
            variables=variables,
            model_name=request.POST.get("model", ""),
            template_every_turn=request.POST.get("later_turns") == "template",
        )
    except (MissingVariablesError, TemplateError, services.ChatError) as exc:
        return render(
            request, "prompts/_preview.html", {"previews": [{"version": version, "error": str(exc)}]}, status=400
        )
    request_reply_after_commit()
    if request.htmx:
        return HttpResponseClientRedirect(conversation.get_absolute_url())
    return redirect(conversation)


def _format_label(version) -> str:
    """What the run card says of the version's output format ("" for free text)."""
    if version is None:
        return ""
    return {
        "json": "JSON object",
        "json_schema": "JSON Schema",
        "regex": "regular expression",
        "choice": "one of the choices",
    }.get(version.answer_format["type"], "")

"""An OpenAI-compatible API: `GET /v1/models`, `POST /v1/chat/completions` (streamed as
server-sent events, or not), `POST /v1/embeddings` (the bundled embedder), with the studio's API
tokens. Requests for completions are stored as conversations of kind `api` (their token's owner
sees them, and can flag their replies) and answered by the same model workers and batches as the
chat. Errors come in OpenAI's shape:
`{"error": {"message", "type", "param", "code"}}`.

A prompt of the library is a model too: `prompt:<slug>` (its `production` label, else the
latest version), `prompt:<slug>@<label>`, `prompt:<slug>@v3`. Its instructions, few-shot
examples (fixed, or chosen for this input) and parameters apply; the request's last user message
fills the template's single variable, or `variables` (`extra_body={"variables": {...}}`) fills several.
A prompt running an A/B split (prompts/splits.py) serves `prompt:<slug>` from the label its split
gives the end user (OpenAI's `user` field, else the token), and the answer says which.

`tools` (studio/llm/tools.py): checked and bounded here, stored with the conversation; the history's
calls and results are stored in the Hermes text form the model reads; the reply's calls are read
back from its text into `message.tool_calls`, or OpenAI's `tool_calls` deltas as it streams.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.http import JsonResponse, StreamingHttpResponse
from django.utils import dateformat, timezone

from accounts.api import api_endpoint
from accounts.models import ApiToken, token_digest
from accounts.services import person_lock
from accounts.throttle import ApiRefusal
from chat import services
from chat.models import Conversation, Message
from chat.retrieval import reply_retrieval
from chat.selectors import tools_in_effect
from prompts import selectors as prompt_selectors
from prompts.examples import examples_for
from prompts.models import Prompt
from prompts.rendering import (
    MissingVariablesError,
    TemplateError,
    assembled_messages,
    format_warnings,
    render_owner,
    render_version_turn,
)
from prompts.selectors import prompt_counter
from prompts.services import tools_can_be_enforced
from prompts.splits import active_split
from studio.errors import StudioError
from studio.llm.constraints import FormatError, OutputFormat, closed_objects
from studio.llm.numpy_embedder import EMBEDDING_MODEL, MAX_TOKENS, load_numpy_embedder
from studio.llm.replies import SamplingError, sampling_checked
from studio.llm.tools import (
    TOOL_NAME,
    CallReader,
    ToolError,
    ToolUse,
    assistant_text,
    clean_tool_use,
    hermes_messages,
    openai_tool_choice,
    openai_tools,
    read_reply,
    responses_text,
)

from . import queue, registry
from .wakeups import wake_workers

# Parameters of OpenAI's API the studio does not do: refused (naming the parameter) rather than
# silently ignored, when set to anything but their "off" value.
UNSUPPORTED = {
    "n": lambda value: value not in (None, 1),
    "logprobs": lambda value: value not in (None, False),
    "top_logprobs": lambda value: value not in (None, 0),
    "functions": lambda value: value not in (None, []),
    "function_call": lambda value: value not in (None, "none", "auto"),
    "logit_bias": lambda value: value not in (None, {}),
    "presence_penalty": lambda value: value not in (None, 0, 0.0),
    "frequency_penalty": lambda value: value not in (None, 0, 0.0),
    "audio": lambda value: value is not None,
    "prediction": lambda value: value is not None,
    "modalities": lambda value: value not in (None, ["text"]),
}
# What to send instead, where a refused parameter has a supported form.
INSTEAD = {
    "functions": 'it is OpenAI\'s deprecated form: send `tools` ([{"type": "function", "function": {...}}]) instead',
    "function_call": "it is OpenAI's deprecated form: send `tool_choice` instead",
}
log = logging.getLogger("chat")
PROMPT_MODEL = re.compile(
    r"^prompt:(?P<slug>[a-z0-9]+(?:-[a-z0-9]+)*)(?:@(?:v(?P<number>\d{1,9})|(?P<label>[a-z0-9][a-z0-9_-]{0,39})))?$"
)
MAX_MESSAGES = 500
MAX_END_USER_CHARS = 256  # OpenAI's `user`: an id of the application's end user, not a text


class ApiError(StudioError):
    """A refusal with OpenAI's error fields (`type`, `param`, `code`)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message, status=status)
        self.kind, self.param, self.code = kind, param, code


def openai_error(status: int, error: StudioError | str) -> JsonResponse:
    """Any refusal (api_endpoint's, a service's or ours) in OpenAI's shape, which its clients read."""
    kind, param, code = "invalid_request_error", None, None
    if isinstance(error, ApiError):
        kind, param, code = error.kind, error.param, error.code
    elif isinstance(error, ApiRefusal):
        kind, code = ("rate_limit_error", "rate_limit_exceeded") if status == 429 else (kind, "invalid_api_key")
    elif isinstance(error, services.ChatError):
        param = "messages"
    message = error.message if isinstance(error, StudioError) else str(error)
    return JsonResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status=status)


# --- /v1/models --------------------------------------------------------------------------------------


def _model_list() -> list[dict]:
    created = int(time.time())
    names = registry.available_models()
    entries = [
        {"id": name, "object": "model", "created": created, "owned_by": "studio" if n == 0 else "fine-tune"}
        for n, name in enumerate(names)
    ]
    entries.append(
        {"id": EMBEDDING_MODEL, "object": "model", "created": created, "owned_by": "studio"}
    )  # /v1/embeddings
    entries += [
        {"id": f"prompt:{slug}", "object": "model", "created": created, "owned_by": "prompt-library"}
        for slug in Prompt.objects.order_by("slug").values_list("slug", flat=True)
    ]
    return entries


@api_endpoint("GET", error_response=openai_error)
def models(request, user, model_id: str | None = None):
    entries = _model_list()
    if model_id is None:
        return JsonResponse({"object": "list", "data": entries})
    found = next((entry for entry in entries if entry["id"] == model_id), None)
    if found is None and PROMPT_MODEL.match(model_id):
        found = {"id": model_id, "object": "model", "created": int(time.time()), "owned_by": "prompt-library"}
    if found is None:
        raise ApiError(404, f"The model `{model_id[:200]}` does not exist.", param="model", code="model_not_found")
    return JsonResponse(found)


# --- /v1/embeddings ----------------------------------------------------------------------------------

# The bundled embedder, by the name the studio lists and by its Hugging Face id (what TEI and vLLM call it).
EMBEDDING_MODEL_IDS = (EMBEDDING_MODEL, f"sentence-transformers/{EMBEDDING_MODEL}")
EMBEDDING_DIMENSION = 384
MAX_EMBEDDING_INPUTS = 256
# A text's characters: the model reads its first MAX_TOKENS tokens (a few hundred words) and cuts the
# rest, as the bundled embedder does everywhere; this bounds the work before it starts.
MAX_EMBEDDING_INPUT_CHARS = 8192
EMBEDDING_BATCH = 16  # texts a matrix product: 256 tokens each keep its attention at about 50 MB
# Embedding is CPU work: two threads of the web process do it, off the event loop, so chats and
# other requests go on meanwhile; a request waits its turn, and past this many waiting, 429.
MAX_WAITING_EMBEDDING_REQUESTS = 32
_embedding_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="v1-embeddings")
_embedding_requests = 0  # waiting or running, in this process (changed on the event loop only)


def clean_embedding_request(body) -> dict:
    """OpenAI's embeddings request, checked before any work: {"input": text or [text], "model",
    "encoding_format": "float" | "base64", "dimensions": 384}."""
    if not isinstance(body, dict):
        raise ApiError(400, f'Send a JSON object: {{"input": ["text", ...], "model": "{EMBEDDING_MODEL}"}}.')
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, f"`model` is required: {EMBEDDING_MODEL}.", param="model")
    if model not in EMBEDDING_MODEL_IDS:
        raise ApiError(
            404,
            f"The model `{model[:200]}` does not exist or does not embed; this server embeds with {EMBEDDING_MODEL}.",
            param="model",
            code="model_not_found",
        )
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if (
        isinstance(texts, list)
        and texts
        and all(
            isinstance(item, int) or (isinstance(item, list) and all(isinstance(n, int) for n in item))
            for item in texts
        )
    ):
        raise ApiError(
            400,
            "`input` as token ids is not supported: send the texts (the ids are another tokenizer's; with "
            "LangChain's OpenAIEmbeddings, set check_embedding_ctx_length=False).",
            param="input",
            code="unsupported_parameter",
        )
    if not isinstance(texts, list) or not texts or not all(isinstance(item, str) for item in texts):
        raise ApiError(400, "`input` must be a text or a list of texts.", param="input")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise ApiError(
            400, f"`input` holds {len(texts):,} texts; at most {MAX_EMBEDDING_INPUTS} a request.", param="input"
        )
    for n, text in enumerate(texts):
        if len(text) > MAX_EMBEDDING_INPUT_CHARS:
            raise ApiError(
                400,
                f"input[{n}] is {len(text):,} characters long; at most {MAX_EMBEDDING_INPUT_CHARS:,} (the model "
                f"reads the first {MAX_TOKENS} tokens of a text and cuts the rest: split longer texts).",
                param="input",
            )
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise ApiError(400, "`encoding_format` must be float or base64.", param="encoding_format")
    if body.get("dimensions") not in (None, EMBEDDING_DIMENSION):
        raise ApiError(
            400,
            f"`dimensions`: {EMBEDDING_MODEL} gives {EMBEDDING_DIMENSION} numbers a text; leave it out.",
            param="dimensions",
            code="unsupported_parameter",
        )
    return {"model": model, "texts": texts, "encoding_format": encoding}


def _embedded(texts: list[str]) -> tuple[np.ndarray, int]:
    """(unit vectors (N, 384), tokens read), in batches of similar lengths (less padding)."""
    embedder = load_numpy_embedder()
    order = sorted(range(len(texts)), key=lambda n: len(texts[n]))
    vectors = np.zeros((len(texts), EMBEDDING_DIMENSION), dtype=np.float32)
    tokens = 0
    for start in range(0, len(order), EMBEDDING_BATCH):
        rows = order[start : start + EMBEDDING_BATCH]
        batch = [texts[n] for n in rows]
        vectors[rows] = embedder.embed(batch)  # (B, 384)
        tokens += sum(sum(encoding.attention_mask) for encoding in embedder.tokenizer.encode_batch(batch))
    return vectors, tokens


@api_endpoint("POST", json_body=True, error_response=openai_error)
async def embeddings(request, user, body):
    global _embedding_requests
    asked = clean_embedding_request(body)
    if _embedding_requests >= MAX_WAITING_EMBEDDING_REQUESTS:
        raise ApiError(
            429,
            f"{MAX_WAITING_EMBEDDING_REQUESTS} embedding requests are waiting already; ask again in a moment.",
            kind="rate_limit_error",
            code="rate_limit_exceeded",
        )
    _embedding_requests += 1
    try:
        vectors, tokens = await asyncio.get_running_loop().run_in_executor(
            _embedding_threads, _embedded, asked["texts"]
        )
    finally:
        _embedding_requests -= 1
    if asked["encoding_format"] == "base64":  # float32, little-endian: what OpenAI's clients decode
        encoded = [base64.b64encode(vector.astype("<f4").tobytes()).decode() for vector in vectors]
    else:
        encoded = [vector.tolist() for vector in vectors]
    return JsonResponse(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": n, "embedding": vector} for n, vector in enumerate(encoded)],
            "model": asked["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


# --- /v1/chat/completions ----------------------------------------------------------------------------


def _text_content(content, where: str) -> str:
    """A message's content: text, or OpenAI's list of parts (text parts only)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(p["text"] for p in content)
    raise ApiError(400, f"{where}: content must be text (or a list of text parts).", param="messages")


def clean_request(body) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, "Send a JSON object with `model` and `messages`.")
    for name, unsupported in UNSUPPORTED.items():
        try:
            refused = unsupported(body.get(name))
        except TypeError:  # an unhashable value where a plain one was expected
            refused = True
        if refused:
            raise ApiError(
                400,
                f"`{name}` is not supported by this server; {INSTEAD.get(name, 'leave it out')}.",
                param=name,
                code="unsupported_parameter",
            )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "`model` is required (see GET /v1/models).", param="model")
    if model in EMBEDDING_MODEL_IDS:
        raise ApiError(
            404,
            f"`{model}` is an embedding model, not a chat model: use POST /v1/embeddings.",
            param="model",
            code="model_not_found",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or len(messages) > MAX_MESSAGES:
        raise ApiError(400, f"`messages` must be a list of 1 to {MAX_MESSAGES} messages.", param="messages")
    # Bounded before anything is rendered: 1,000 tools or 1 MB of them is refused naming the bound.
    # A prompt's `tool_choice` with no `tools` is about its version's tools: checked once it is known.
    tool_settings = {"tool_choice": body.get("tool_choice"), "parallel_tool_calls": body.get("parallel_tool_calls")}
    tools_to_come = body.get("tools") in (None, []) and PROMPT_MODEL.match(model) is not None
    try:
        tool_use = None if tools_to_come else clean_tool_use(body.get("tools"), **tool_settings)
    except ToolError as exc:
        raise ApiError(400, str(exc), param=exc.param) from None
    clean = _clean_messages(messages)
    if clean[-1]["role"] != "user":
        raise ApiError(400, "The last message must be the user's (or a tool's result).", param="messages")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    asked = {
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "max_new_tokens": max_tokens,
        "seed": body.get("seed"),
        "stop": body.get("stop"),
    }
    try:
        parameters: dict = dict(sampling_checked(asked, max_new_tokens_cap=settings.LLM_MAX_NEW_TOKENS_CAP))
    except SamplingError as exc:
        param = "max_tokens" if exc.field == "max_new_tokens" else exc.field
        raise ApiError(400, f"`{param}` {exc.requirement}.", param=param, code=exc.code) from None
    variables = body.get("variables")
    if variables is not None and (
        not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values())
    ):
        raise ApiError(400, "`variables` must be an object of text values.", param="variables")
    output_format = _output_format_asked(body.get("response_format"))
    if output_format is not None:
        parameters["output_format"] = output_format
    if tool_use:
        parameters["tools"] = tool_use
    end_user = body.get("user")
    if end_user is not None and (not isinstance(end_user, str) or len(end_user) > MAX_END_USER_CHARS):
        raise ApiError(
            400, f"`user` must be text of at most {MAX_END_USER_CHARS} characters (your end user's id).", param="user"
        )
    options = body.get("stream_options") or {}
    return {
        "model": model,
        "messages": clean,
        "stream": bool(body.get("stream")),
        "variables": variables,
        "end_user": end_user or "",
        "include_usage": bool(isinstance(options, dict) and options.get("include_usage")),
        "parameters": parameters,
        # For a prompt's version's tools (_tools_in_effect): the request's choice of them, if any.
        "tool_settings": tool_settings if tools_to_come else {},
    }


def _clean_messages(messages: list) -> list[dict]:
    """The request's messages as the studio stores them ({"role", "content"}, roles system, user and
    assistant): an assistant's `tool_calls` written into its text, and the `tool` messages after it
    as one user turn of tool results (marked `tool_results`), in the Hermes text form (tools.py)."""
    clean, call_ids = [], set()
    for n, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "function":
            raise ApiError(
                400,
                f"messages[{n}]: the `function` role is OpenAI's deprecated form; send the result as a "
                "`tool` message with the `tool_call_id` it answers.",
                param="messages",
                code="unsupported_parameter",
            )
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise ApiError(400, f"messages[{n}]: role must be system, user, assistant or tool.", param="messages")
        if role == "assistant" and message.get("tool_calls"):
            said = message.get("content")
            content = "" if said is None else _text_content(said, f"messages[{n}]")
            calls = _history_calls(message["tool_calls"], f"messages[{n}]")
            call_ids.update(call_id for call_id, _, _ in calls)
            content = assistant_text(content, [(name, arguments) for _, name, arguments in calls])
        else:
            content = _text_content(message.get("content"), f"messages[{n}]")
        if role == "tool" and message.get("tool_call_id") not in call_ids:
            raise ApiError(
                400,
                f"messages[{n}]: its `tool_call_id` {str(message.get('tool_call_id'))[:80]!r} matches no tool call "
                "of an earlier assistant message.",
                param="messages",
            )
        if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
            raise ApiError(
                400, f"messages[{n}] is longer than {settings.CHAT_MAX_MESSAGE_CHARS:,} characters.", param="messages"
            )
        if role == "tool":
            if clean and clean[-1].get("tool_results"):  # the results of one turn's calls: one user turn
                clean[-1]["results"].append(content)
            else:
                clean.append({"role": "user", "tool_results": True, "results": [content]})
            continue
        clean.append({"role": "system" if role == "developer" else role, "content": content})
    for turn in clean:
        if turn.get("tool_results"):
            results = turn.pop("results")
            turn["content"] = responses_text(results)
            if len(turn["content"]) > settings.CHAT_MAX_MESSAGE_CHARS:
                raise ApiError(
                    400,
                    f"The {len(results)} tool results of one turn come to more than "
                    f"{settings.CHAT_MAX_MESSAGE_CHARS:,} characters together.",
                    param="messages",
                )
    return clean


def _history_calls(tool_calls, where: str) -> list[tuple[str, str, dict]]:
    """An assistant message's `tool_calls` in a history: (id, name, arguments) each."""
    if not isinstance(tool_calls, list):
        raise ApiError(400, f"{where}.tool_calls: must be a list of calls.", param="messages")
    calls = []
    for k, call in enumerate(tool_calls):
        place = f"{where}.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str):
            raise ApiError(
                400,
                f'{place}: must be {{"id", "type": "function", "function": {{"name", "arguments"}}}}.',
                param="messages",
            )
        name = function.get("name")
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            raise ApiError(400, f"{place}.function.name: 1 to 64 letters, digits, _ or -.", param="messages")
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, ValueError, RecursionError):
            arguments = None
        if not isinstance(arguments, dict):
            raise ApiError(400, f"{place}.function.arguments: must be a JSON object, as text.", param="messages")
        calls.append((call["id"], name, arguments))
    return calls


def _output_format_asked(response_format) -> OutputFormat | None:
    """OpenAI's `response_format` as an output format: `json_object` any JSON object, `json_schema`
    that schema (the official client's `parse(response_format=PydanticModel)` sends it), `text` free."""
    if response_format in (None, {"type": "text"}):
        return None
    shape = (
        '`response_format` must be {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", '
        '"json_schema": {"name": ..., "schema": {...}, "strict": true}}.'
    )
    if not isinstance(response_format, dict):
        raise ApiError(400, shape, param="response_format")
    if response_format.get("type") == "json_object":
        return {"type": "json"}
    described = response_format.get("json_schema")
    if (
        response_format.get("type") != "json_schema"
        or not isinstance(described, dict)
        or not isinstance(described.get("schema"), dict)
    ):
        raise ApiError(400, shape, param="response_format")
    schema = described["schema"]
    if described.get("strict"):  # OpenAI's strict mode: no key beyond the properties, unless the schema says so
        schema = closed_objects(schema)
    return {"type": "json_schema", "schema": schema}


def _start(user, asked: dict, authorization: str = "") -> tuple[Conversation, Message, str]:
    """Store the request as an `api` conversation with a queued reply; (conversation, reply, model).
    `authorization`: the request's header, whose token is the end user of a split when the request
    names none."""
    render_owner.set(lambda: f"user:{user.pk}")  # the token's person takes their turn at the render processes
    messages, model = asked["messages"], asked["model"]
    version, variables, record, examples, example_cases, variant = None, {}, None, [], None, ""
    matched = PROMPT_MODEL.match(model)
    if matched:
        prompt = prompt_selectors.prompt_by_slug(matched["slug"])
        if prompt is None:
            raise ApiError(
                404,
                f"The model `{model}` does not exist: no prompt `{matched['slug']}`.",
                param="model",
                code="model_not_found",
            )
        try:
            if matched["number"] or matched["label"]:
                version = prompt_selectors.version_resolve(prompt, number=matched["number"], label=matched["label"])
            else:
                version, variant = _split_version(prompt, asked["end_user"], authorization)
        except prompt_selectors.VersionNotFound as exc:
            raise ApiError(404, str(exc), param="model", code="model_not_found") from None
        # The last question fills the template (tool results after it stay turns of their own).
        asking = _last_question(messages)
        last = messages[asking]["content"]
        variables = asked["variables"] or ({version.variables[0]: last} if len(version.variables) == 1 else {})
        # Retrieved as the token's owner, before rendering (a template may lay the passages out).
        record = reply_retrieval(Conversation(owner=user, prompt_version=version), content=last, variables=variables)
        try:
            user_turn = render_version_turn(version, variables, record)
        except (MissingVariablesError, TemplateError) as exc:
            raise ApiError(400, f"{exc} (give them as `variables`).", param="variables") from None
        messages = [
            *(m for m in messages[:asking] if m["role"] != "system"),
            {"role": "user", "content": user_turn},
            *messages[asking + 1 :],
        ]
        system = version.instructions
        # Chosen for this input as the token's owner, recorded on the reply (which reads them).
        examples, example_cases = examples_for(version, user=user, variables=variables, text=last)
        served = registry.available_served_model(version.model_name)
    else:
        served = registry.served_model_choice(model) if model else None
        if served is None:
            raise ApiError(
                404,
                f"The model `{model[:200]}` does not exist (see GET /v1/models).",
                param="model",
                code="model_not_found",
            )
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        messages = [m for m in messages if m["role"] != "system"]
    _require_format_can_be_enforced(asked["parameters"], version)
    asked["tool_use"] = _tools_in_effect(asked, version)
    _require_tools_can_be_enforced(asked, version)
    _require_context_fits(system, version, examples, messages, asked["parameters"], asked["tool_use"])
    with transaction.atomic():
        # Counted and created under the person's lock: simultaneous requests cannot all pass.
        person_lock(user)
        if queue.replies_queued_by(user=user) >= settings.LLM_MAX_QUEUED_PER_USER:
            # One person's burst must not fill the queue in front of everyone else's chats.
            raise ApiError(
                429,
                f"You have {settings.LLM_MAX_QUEUED_PER_USER} requests waiting for the model "
                "already; wait for some to finish.",
                kind="rate_limit_error",
                code="rate_limit_exceeded",
            )
        conversation = Conversation.objects.create(
            owner=user,
            kind=Conversation.Kind.API,
            system_prompt=system,
            prompt_version=version,
            prompt_variables=variables,
            model_name=served,
            parameters=asked["parameters"],
            title=_api_title(asked),
        )
        services.messages_append(conversation=conversation, turns=messages[:-1])
        _, reply = services.reply_request(
            conversation=conversation, content=messages[-1]["content"], retrieval=record, example_cases=example_cases
        )
        if variant:  # in the same transaction: the reply is never seen (by a worker, a rollup) without it
            reply.variant = variant
            reply.save(update_fields=["variant"])
    return conversation, reply, model


def _split_version(prompt, end_user: str, authorization: str):
    """(version, variant) that serves `prompt:<slug>`: the label a running split gives this end user
    (OpenAI's `user`, else the request's token: the same one always gets the same label while the
    weights stay), else the production label's version (else the newest) and no variant."""
    split = active_split(prompt)
    if split is not None:
        key = f"user:{end_user}" if end_user else f"token:{_token_id(authorization)}"
        label = split.variant_for(key)
        try:
            return prompt_selectors.version_resolve(prompt, label=label), label
        except prompt_selectors.VersionNotFound:  # labels only move; this guards rows changed by hand
            log.warning("split %s names %s@%s, which is gone; serving production", split.pk, prompt.slug, label)
    return prompt_selectors.served_version(prompt), ""


def _token_id(authorization: str) -> int | None:
    """The id of the API token the request was let in with."""
    raw_token = authorization.partition(" ")[2].strip()
    return ApiToken.objects.filter(digest=token_digest(raw_token)).values_list("pk", flat=True).first()


API_TITLE_WORDS_CHARS = 48  # of what was asked, in the title (the sidebar shows about this much)


def _last_question(messages: list[dict]) -> int:
    """The index of the last user message that is no turn of tool results (else the last message)."""
    return next(
        (
            n
            for n in range(len(messages) - 1, -1, -1)
            if messages[n]["role"] == "user" and not messages[n].get("tool_results")
        ),
        len(messages) - 1,
    )


def _api_title(asked: dict) -> str:
    """A request's conversation title: the first words it asked (its variables' values, else its
    last question) and when: “How do I restart the router… · 7 Dec 14:05”."""
    asked_text = (
        " ".join(v for v in (asked["variables"] or {}).values() if isinstance(v, str))
        or asked["messages"][_last_question(asked["messages"])]["content"]
    )
    when = dateformat.format(timezone.localtime(), "j M H:i")
    return f"{services.title_cut(asked_text, API_TITLE_WORDS_CHARS) or asked['model'][:60]} · {when}"


def _require_format_can_be_enforced(parameters: dict, version) -> None:
    """The asked format (else the prompt's) compiles, and the engine can enforce it: refused now, with
    OpenAI's `param`, never at decoding time."""
    asked = parameters.get("output_format")
    if asked is not None:
        try:
            format_warnings(asked)
        except FormatError as exc:
            raise ApiError(400, f"`response_format`: {exc}", param="response_format", code=exc.code) from None
    effective = asked or (version.answer_format if version is not None else None)
    if effective and effective["type"] in ("regex", "choice") and settings.LLM_ENGINE == "openai":
        raise ApiError(
            400,
            f"The model is served by an external engine, which takes only JSON formats; this "
            f"prompt's output format is a {effective['type']}.",
            param="response_format",
        )


def _tools_in_effect(asked: dict, version) -> ToolUse | None:
    """The tools the reply may call (chat.selectors.tools_in_effect: the request's `tools` replace
    the version's). A request's `tool_choice` or `parallel_tool_calls` without `tools` applies to
    its prompt version's tools: checked against them (a named function must be one of them), and
    stored with the request so that the worker holds the reply to that choice."""
    settings_asked = {name: value for name, value in asked.get("tool_settings", {}).items() if value is not None}
    version_tools = version.tool_use if version is not None else None
    if settings_asked:
        try:
            tool_use = clean_tool_use(
                openai_tools(version_tools) if version_tools else None,
                settings_asked.get("tool_choice", openai_tool_choice(version_tools) if version_tools else None),
                settings_asked.get("parallel_tool_calls", version_tools["parallel"] if version_tools else None),
            )
        except ToolError as exc:
            if version_tools:
                exc = ToolError(
                    f"{exc} (`prompt:` models call their version's tools unless you send `tools`)", exc.param
                )
            raise ApiError(400, str(exc), param=exc.param) from None
        if tool_use and tool_use != version_tools:
            asked["parameters"]["tools"] = tool_use
    return tools_in_effect(parameters=asked["parameters"], prompt_version=version)


def _require_tools_can_be_enforced(asked: dict, version) -> None:
    """Each tool's parameters compile as an output format's schema does (refused naming the tool, with
    OpenAI's `param`, never at decoding time; a version's were when it was saved), and the calls can
    be held beside the output format (prompts.services.tools_can_be_enforced, as versions are checked)."""
    tool_use: ToolUse | None = asked["tool_use"]
    output_format = asked["parameters"].get("output_format") or (version.answer_format if version is not None else None)
    try:
        tools_can_be_enforced(tool_use, output_format, schemas="tools" in asked["parameters"])
    except ToolError as exc:
        raise ApiError(400, str(exc), param=exc.param, code=getattr(exc, "code", "") or None) from None


def _require_context_fits(
    system: str, version, examples: list[dict], messages: list[dict], parameters: dict, tool_use: ToolUse | None
) -> None:
    """Refuse (400, OpenAI's `context_length_exceeded`) a request whose messages do not fit the
    model's context with room for the reply, before it is stored or reaches a worker. Linear:
    the messages' text is tokenised once; the chat template is rendered only when that much fits."""
    counter = prompt_counter()
    if counter is None:  # the model is still being prepared: the worker fits the history itself
        return
    history = assembled_messages(system=system, examples=examples, turns=messages)
    if tool_use and not counter.takes_tools:  # listed in the system turn, as the worker shows them
        history, tool_use = hermes_messages(history, tool_use), None
    version_sampling = version.reply_sampling if version is not None else {}
    max_new_tokens = (
        parameters.get("max_new_tokens") or version_sampling.get("max_new_tokens") or settings.LLM_MAX_NEW_TOKENS
    )
    budget = counter.context_length - max_new_tokens
    encoded = counter.tokenizer.encode_batch([m["content"] for m in history], add_special_tokens=False)
    tokens = sum(len(e.ids) for e in encoded)
    if tokens <= budget:
        tokens = counter.count(history, tool_use=tool_use)
        if tokens <= budget:
            return
    raise ApiError(
        400,
        f"This model's maximum context length is {counter.context_length} tokens and the reply may "
        f"take {max_new_tokens} (`max_tokens`), so the messages may take {budget}; yours take "
        f"{tokens}, {tokens - budget} too many. Shorten them or leave out earlier ones.",
        param="messages",
        code="context_length_exceeded",
    )


@database_sync_to_async
def _stored(message_id: int) -> Message:
    """The stored reply, read without keeping a database connection while the request waits on."""
    return Message.objects.get(pk=message_id)


async def _events(conversation: Conversation, reply: Message):
    """The reply's events from its conversation group: ("token", text) ... ("done", event). While
    the channel layer is away the stored row is followed instead (its text is stored before it is
    sent), so a Redis restart neither loses text nor leaves the request hanging."""
    layer = get_channel_layer()
    sent = 0  # characters of the reply yielded so far
    deadline = time.monotonic() + settings.LLM_QUEUE_TIMEOUT_SECONDS + settings.LLM_STALL_TIMEOUT_SECONDS
    channel = None
    try:
        try:
            channel = await layer.new_channel("openai-api")
            await layer.group_add(conversation.group_name, channel)
        except Exception as exc:  # the layer is away: the stored row is followed instead
            log.warning("cannot follow reply %s on the channel layer (%s); reading the row", reply.pk, exc)
            channel = None
        await wake_workers(layer)
        while time.monotonic() < deadline:
            try:
                if channel is None:
                    raise ConnectionError("following the stored row")
                event = await asyncio.wait_for(layer.receive(channel), timeout=2.0)
            except Exception:
                # The layer is away, or silent for 2 s (queued, or its groups were lost in a Redis
                # restart): follow the stored row from here on; it holds all text sent so far.
                channel = None
                stored = await _stored(reply.pk)
                if stored.content[sent:]:
                    yield "token", stored.content[sent:]
                    sent = len(stored.content)
                if not stored.in_progress:
                    yield (
                        "done",
                        {
                            "status": stored.status,
                            "error": stored.error,
                            "error_code": stored.error_code,
                            "finish_reason": stored.finish_reason,
                            "usage": stored.usage(),
                        },
                    )
                    return
                await asyncio.sleep(0.2)
                continue
            if event.get("message_id") != reply.pk:
                continue
            if event["type"] == "chat.token":
                sent += len(event["text"])
                yield "token", event["text"]
            elif event["type"] == "chat.done":
                yield "done", event
                return
        stored = await _stored(reply.pk)  # the sweeper has failed it by now (or it just ended)
        yield (
            "done",
            {
                "status": stored.status,
                "error": stored.error or "The model did not answer in time.",
                "error_code": stored.error_code,
                "finish_reason": stored.finish_reason,
                "usage": stored.usage(),
            },
        )
    finally:
        if channel is not None:
            try:
                await layer.group_discard(conversation.group_name, channel)
            except Exception as exc:  # the group expires on its own
                log.warning("could not leave %s: %s", conversation.group_name, exc)


def _finish_reason(event: dict, parameters: dict) -> str:
    """OpenAI's finish_reason: "length" when the reply hit its limit, else "stop" (also for a reply
    someone stopped, whose figures may be missing: it was stopped before a worker took it)."""
    if event.get("finish_reason") == "length":
        return "length"
    limit = parameters.get("max_new_tokens") or settings.LLM_MAX_NEW_TOKENS
    return "length" if ((event.get("usage") or {}).get("completion_tokens") or 0) >= limit else "stop"


def _usage(event: dict) -> dict:
    usage = event.get("usage") or {}
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@api_endpoint("POST", json_body=True, error_response=openai_error)
async def chat_completions(request, user, body):
    asked = clean_request(body)
    # database_sync_to_async: the request's connection goes back to the pool before the wait for
    # the reply (sync_to_async kept it for the whole wait: one per waiting request).
    conversation, reply, model = await database_sync_to_async(_start)(
        user, asked, request.headers.get("Authorization", "")
    )
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    # Where the request is kept in the studio (open it, flag its reply): a header, and a key of ours
    # in the JSON (OpenAI's clients keep unknown keys: `completion.model_extra["studio"]`).
    found_at = {"X-Studio-Conversation": conversation.get_absolute_url()}
    studio = _studio_note(conversation, reply)
    if asked["stream"]:
        return StreamingHttpResponse(
            _stream(conversation, reply, asked, model, completion_id, created, studio),
            content_type="text/event-stream",
            headers={"Cache-Control": "no-cache", **found_at},
        )
    try:
        async for kind, payload in _events(conversation, reply):
            if kind == "done":
                done = payload
    except asyncio.CancelledError:  # the client went away (Django cancels the view): stop its reply
        await asyncio.shield(_stop(reply.pk))
        raise
    stored = await Message.objects.aget(pk=reply.pk)  # the stored text is the answer
    if done.get("status") == "failed":
        raise ApiError(
            503,
            done.get("error") or "The model failed to answer.",
            kind="server_error",
            code=done.get("error_code") or None,
        )
    message, finish_reason = {"role": "assistant", "content": stored.content}, _finish_reason(done, asked["parameters"])
    if _reads_calls(asked):
        content, calls = read_reply(stored.content)
        if calls:  # OpenAI's shape: the text before the calls (null when none), then the calls
            message = {"role": "assistant", "content": content or None, "tool_calls": calls}
            finish_reason = "tool_calls" if finish_reason != "length" else finish_reason
    return JsonResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
            "usage": _usage(done),
            "studio": studio,
        },
        headers=found_at,
    )


def _reads_calls(asked: dict) -> bool:
    """The reply's `<tool_call>`s are calls (not with `tool_choice: "none"`, where none is parsed)."""
    tool_use = asked.get("tool_use")  # in effect: the request's, else its prompt version's (_start)
    return bool(tool_use) and tool_use["choice"] != "none"


def _call_delta(event: tuple) -> dict:
    """A CallReader event as OpenAI's streamed delta: content, a call's id and name, its arguments' pieces."""
    if event[0] == "content":
        return {"content": event[1]}
    if event[0] == "call":
        _, index, call_id, name = event
        return {
            "tool_calls": [
                {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
            ]
        }
    return {"tool_calls": [{"index": event[1], "function": {"arguments": event[2]}}]}


def _studio_note(conversation, reply) -> dict:
    """Our key in every answer: the conversation that keeps the request and, for a prompt, the
    version that answered and the split's variant that chose it ("" when no split did)."""
    note = {"conversation": conversation.pk}
    if conversation.prompt_version is not None:
        note.update(variant=reply.variant, version=conversation.prompt_version.number)
    return note


async def _stream(conversation, reply, asked, model, completion_id, created, studio):
    def chunk(delta: dict, finish_reason=None, **extra) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
            **extra,
        }
        if asked["include_usage"]:
            body.setdefault("usage", None)
        return f"data: {json.dumps(body)}\n\n"

    finished = False
    reader = CallReader() if _reads_calls(asked) else None  # the reply's calls, read as they are written
    try:
        yield chunk({"role": "assistant", "content": ""}, studio=studio)
        async for kind, payload in _events(conversation, reply):
            if kind == "token" and reader is None:
                yield chunk({"content": payload})
                continue
            if kind == "token":
                for event in reader.feed(payload):
                    yield chunk(_call_delta(event))
                continue
            if payload.get("status") == "failed":
                error = {
                    "message": payload.get("error") or "The model failed to answer.",
                    "type": "server_error",
                    "param": None,
                    "code": payload.get("error_code") or None,
                }
                yield f"data: {json.dumps({'error': error})}\n\n"
            else:
                finish_reason = _finish_reason(payload, asked["parameters"])
                if reader is not None:
                    for event in reader.end():
                        yield chunk(_call_delta(event))
                    if reader.calls and finish_reason != "length":
                        finish_reason = "tool_calls"
                # The last chunks say again where it is kept and which variant and version answered.
                yield chunk({}, finish_reason, studio=studio)
                if asked["include_usage"]:
                    body = {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": _usage(payload),
                        "studio": studio,
                    }
                    yield f"data: {json.dumps(body)}\n\n"
            finished = True
        yield "data: [DONE]\n\n"
    finally:
        if not finished:  # the client went away: stop the reply (its text so far is stored)
            await _stop(reply.pk)


async def _stop(message_id: int) -> None:
    message = await Message.objects.filter(pk=message_id).afirst()
    if message is None or not message.in_progress:
        return
    stopped = await sync_to_async(queue.reply_stop_if_queued)(message=message)
    if not stopped:
        message = await Message.objects.aget(pk=message_id)
        if message.worker_channel:
            try:
                await get_channel_layer().send(message.worker_channel, {"type": "chat.stop", "message_id": message_id})
            except Exception as exc:  # the channel layer is away: the reply runs to its length limit
                log.warning("could not tell the worker to stop reply %s: %s", message_id, exc)

"""Writes to failure cases, selections and evaluations. Views, the API, imports and tasks call these."""

from __future__ import annotations

import json
import random
import re

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.services import person_lock
from chat.models import Message
from chat.selectors import chat_history_before
from chat.signals import reply_flagged
from prompts import selectors as prompt_selectors
from prompts.examples import examples_of_cases
from prompts.rendering import MissingVariablesError, TemplateError, pattern_error
from studio import jobs
from studio.errors import StudioError
from studio.input_checks import find_unstorable, json_depth_exceeds
from studio.jobs import JobStatus, job_cancel

from . import selectors
from .models import (
    NEW_CASE_SHARED,
    CaseSelection,
    Evaluation,
    EvaluationResult,
    FailureCase,
    ImportDraft,
    Tag,
    input_digest,
)
from .prompting import user_turn
from .runner import evaluation_withdraw_cases
from .scorers import ScorerError, clean_scorers
from .tag_cells import tags_cell_split
from .tool_answers import AnswerError, answer_text

MAX_TEXT_CHARS = 32_000
MAX_CONTEXT_MESSAGES = 200
MAX_TAGS = 20
MAX_CASES_PER_REQUEST = 5_000


class CaseError(StudioError):
    """A case the studio refuses; `field` names what to fix (`[3].expected` in a list)."""


class CasePermissionError(CaseError):
    status = 403


# --- checking what people send -----------------------------------------------------------------


def _text(value, field, *, required=False, limit=MAX_TEXT_CHARS) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise CaseError("must be text", field)
    if required and not value.strip():
        raise CaseError("must not be empty", field)
    if len(value) > limit:
        raise CaseError(f"is longer than {limit:,} characters", field)
    return value


def _answer(value, field, *, required=False) -> str:
    """An `actual` or `expected` answer: text, or tool calls given as JSON (evals/tool_answers.py),
    stored as the text a reply that called them has."""
    try:
        value = answer_text(value, field)
    except AnswerError as exc:
        raise CaseError(exc.message, exc.field) from None
    return _text(value, field, required=required)


def clean_tags(value, field="tags") -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        value = tags_cell_split(value)
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise CaseError(f"must be a list of at most {MAX_TAGS} tags", field)
    tags = []
    for tag in value:
        if not isinstance(tag, str) or len(tag.strip()) > 60:
            raise CaseError("each tag must be text of 60 characters at most", field)
        if tag.strip():
            tags.append(" ".join(tag.strip().lower().split()))
    return list(dict.fromkeys(tags))


def _shared(value, field) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise CaseError("must be true or false", field)


def _choice(value, field, choices, default):
    if value in (None, ""):
        return default
    if value not in choices:
        raise CaseError(f"must be one of {', '.join(choices)}", field)
    return value


def _context(value, field) -> list[dict]:
    if value in (None, ""):
        return []
    if not isinstance(value, list) or len(value) > MAX_CONTEXT_MESSAGES:
        raise CaseError(f"must be a list of at most {MAX_CONTEXT_MESSAGES} messages {{role, content}}", field)
    messages = []
    for n, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise CaseError('must be {"role": system|user|assistant, "content": text}', f"{field}[{n}]")
        messages.append({"role": message["role"], "content": _text(message.get("content"), f"{field}[{n}].content")})
    return messages


def clean_case(raw: dict, *, where: str = "", versions: dict | None = None) -> dict:
    """Checked fields of one case from the API, a form or an import row; raises CaseError.
    Returns model fields plus "tags" (names) and "prompt_version" (resolved). `versions` keeps the
    versions resolved so far, for many rows at once."""
    at = lambda name: f"{where}.{name}" if where else name
    if not isinstance(raw, dict):
        raise CaseError("must be an object", where or "(case)")
    if json_depth_exceeds(raw, 8):
        raise CaseError("is nested too deeply", where or "(case)")
    unstorable = find_unstorable(raw)
    if unstorable:
        raise CaseError(unstorable[1], at(unstorable[0]))
    slug, number = raw.get("prompt"), raw.get("version")
    memo = (
        versions is not None and isinstance(slug, (str, type(None))) and (number is None or type(number) in (str, int))
    )  # plain values only (True == 1 must not match)
    if memo and (slug, number) in versions:
        version = versions[(slug, number)]
    else:
        version = _resolve_version(slug, number, at)
        if memo:
            versions[(slug, number)] = version
    given = raw.get("input")
    variables, text = {}, ""
    if isinstance(given, dict):
        if version is None:
            raise CaseError(
                "is an object of variables, which needs a prompt; without one give the message text", at("input")
            )
        if len(given) > 100 or not all(isinstance(k, str) and isinstance(v, str) for k, v in given.items()):
            raise CaseError("must map variable names to text values", at("input"))
        variables = {name: _text(value, at(f"input.{name}")) for name, value in given.items()}
    elif isinstance(given, str):
        text = _text(given, at("input"), required=True)
    elif version is None or version.variables:
        raise CaseError("must be the message text, or an object of the prompt's variables", at("input"))
    fields = {
        "prompt_version": version,
        "input_variables": variables,
        "input_text": text,
        "context": _context(raw.get("context"), at("context")),
        "actual": _answer(raw.get("actual"), at("actual")),
        "expected": _answer(raw.get("expected"), at("expected"), required=True),
        "tags": clean_tags(raw.get("tags"), at("tags")),
        "note": _text(raw.get("note"), at("note"), limit=5_000),
        "split": _choice(raw.get("split"), at("split"), FailureCase.Split.values, FailureCase.Split.TRAIN),
        "status": _choice(raw.get("status"), at("status"), FailureCase.Status.values, FailureCase.Status.OPEN),
        "model_name": _text(raw.get("model"), at("model"), limit=200),
        "retrieval_judgment": clean_judgment(raw.get("passages"), at("passages")),
        "shared": _shared(raw.get("shared"), at("shared")),
    }
    if version is not None and (variables or not text):
        try:
            user_turn(FailureCase(**{k: v for k, v in fields.items() if k != "tags"}), version)
        except (MissingVariablesError, TemplateError) as exc:
            raise CaseError(str(exc), at("input")) from None
    return fields


NOT_IN_KB = ("not in the knowledge base", "not in kb", "not_in_kb", "none")
MAX_JUDGED_PASSAGES = 20
_DOCUMENT_PAGE = re.compile(
    r"^\s*(?P<document>[^\n]{1,255}?\.[A-Za-z0-9]{1,6})\s*(?:(?:,|#|:|–|-)?\s*(?:p\.?|page)\s*"
    r"(?P<page>\d{1,6}))?\s*$",
    re.IGNORECASE,
)


def clean_judgment(value, field: str = "passages") -> dict:
    """The right passages of a case, as an import or the API gives them: "not in the knowledge
    base"; a passage's text; a document, with its page ("manual.pdf p. 3"); or a JSON list of those
    (texts, or objects with text / document and page / chunk). {} when none is given."""
    if value in (None, "", []):
        return {}
    if isinstance(value, str) and value.strip().lower() in NOT_IN_KB:
        return {"right": [], "not_in_kb": True}
    if isinstance(value, dict) and value.get("not_in_kb") is True:
        return {"right": [], "not_in_kb": True}
    if isinstance(value, str) and value.strip()[:1] == "[":
        try:
            value = json.loads(value)
        except ValueError:
            pass
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_JUDGED_PASSAGES:
        raise CaseError(f"names {len(items)} passages; at most {MAX_JUDGED_PASSAGES}", field)
    right = []
    for n, item in enumerate(items):
        at = f"{field}[{n}]" if isinstance(value, list) else field
        if isinstance(item, str):
            text = _text(item, at, required=True, limit=4_000)
            matched = _DOCUMENT_PAGE.match(text)
            right.append(
                {"document": matched["document"].strip(), "page": int(matched["page"]) if matched["page"] else None}
                if matched
                else {"text": text}
            )
        elif isinstance(item, dict):
            clean = {}
            if item.get("chunk") is not None:
                if not isinstance(item["chunk"], int) or isinstance(item["chunk"], bool):
                    raise CaseError("must be a chunk id", f"{at}.chunk")
                clean["chunk"] = item["chunk"]
            if item.get("text"):
                clean["text"] = _text(item["text"], f"{at}.text", limit=4_000)
            if item.get("document"):
                clean["document"] = _text(item["document"], f"{at}.document", limit=255)
                page = item.get("page")
                if page is not None and (not isinstance(page, int) or isinstance(page, bool) or page < 1):
                    raise CaseError("must be a page number", f"{at}.page")
                clean["page"] = page
            if not clean:
                raise CaseError("must name a passage's text, a document (and page) or a chunk", at)
            right.append(clean)
        else:
            raise CaseError("must be a passage's text, or a document and page", at)
    return {"right": right, "not_in_kb": False}


def case_judge_retrieval(
    *, case: FailureCase, user, chunks=(), not_in_kb: bool = False, passage: str = ""
) -> FailureCase:
    """The person marks which of the case's retrieved passages were right (chunk ids), or that the
    knowledge base does not hold the answer; `passage`: the right passage's text (or "doc.pdf p. 3")
    when none retrieved was it."""
    require_case_editor(case, user)
    if not_in_kb:
        case.retrieval_judgment = {"right": [], "not_in_kb": True}
    else:
        chosen = {int(c) for c in chunks if str(c).isdigit()}
        right = [
            {"chunk": s["chunk"], "document": s.get("document"), "page": s.get("page"), "text": s.get("text", "")}
            for s in case.retrieved
            if s.get("chunk") in chosen
        ]
        if passage.strip():
            right += clean_judgment(passage.strip(), "passage")["right"]
        case.retrieval_judgment = {"right": right, "not_in_kb": False} if right else {}
    case.save(update_fields=["retrieval_judgment", "updated_at"])
    return case


def _resolve_version(slug, number, at):
    if slug in (None, ""):
        if number not in (None, ""):
            raise CaseError("needs a prompt", at("version"))
        return None
    if not isinstance(slug, str):
        raise CaseError("must be a prompt's slug", at("prompt"))
    prompt = prompt_selectors.prompt_by_slug(slug)
    if prompt is None:
        raise CaseError(f"there is no prompt “{slug[:100]}”", at("prompt"))
    if number is not None and not isinstance(number, (int, str)) or isinstance(number, bool):
        raise CaseError("must be a version number (or null for the latest)", at("version"))
    try:
        return prompt_selectors.version_resolve(prompt, number=number)
    except prompt_selectors.VersionNotFound as exc:
        raise CaseError(str(exc), at("version")) from None


# --- writes ------------------------------------------------------------------------------------


def _set_tags(case: FailureCase, names: list[str]) -> None:
    tags = [Tag.objects.get_or_create(name=name)[0] for name in names]
    case.tags.set(tags)


def case_create(*, user, fields: dict, source: str, shared: bool | None = None, **extra) -> FailureCase:
    """One case from `clean_case`'s fields. Shared: the row's own "shared", else `shared`, else the
    one default of every new case (NEW_CASE_SHARED: private until its author shares it)."""
    tags = fields.pop("tags", [])
    row_shared = fields.pop("shared", None)
    shared = next((value for value in (row_shared, shared) if value is not None), NEW_CASE_SHARED)
    review = FailureCase.Review.PENDING if settings.FAILURE_CASE_REVIEW else FailureCase.Review.APPROVED
    case = FailureCase.objects.create(created_by=user, source=source, review=review, shared=shared, **fields, **extra)
    _set_tags(case, tags)
    return case


def cases_create(
    *, user, rows: list, source: str, shared: bool | None = True, numbered: bool = True
) -> list[FailureCase]:
    """Create many cases, all or nothing: a refusal names the row (`[3].expected`), or, not
    `numbered` (one case sent alone), the field only (`expected`). `shared`: for rows that do not
    say (the API and the forms pass None or the person's choice: the default NEW_CASE_SHARED;
    seeds in tests and demos share theirs)."""
    if len(rows) > MAX_CASES_PER_REQUEST:
        raise CaseError(f"at most {MAX_CASES_PER_REQUEST:,} cases at once", "(list)")
    cleaned = [clean_case(row, where=f"[{n}]" if numbered else "") for n, row in enumerate(rows)]
    with transaction.atomic():
        return [case_create(user=user, fields=fields, source=source, shared=shared) for fields in cleaned]


def flag_prefill(message: Message) -> dict:
    """What a reply offers the flag form: its prompt version, the input and context it answered, its text."""
    conversation = message.conversation
    history = chat_history_before(message=message)
    last_user = next((n for n in range(len(history) - 1, -1, -1) if history[n]["role"] == "user"), None)
    version = conversation.prompt_version
    examples = 2 * len(examples_of_cases(version, message.example_cases, user=conversation.owner)) if version else 0
    system = 1 if history and history[0]["role"] == "system" else 0
    context = history[system + examples : last_user] if last_user is not None else []
    if system and version is None:
        context = [history[0]] + context  # a plain chat's system prompt is part of what was sent
    first_turn = not any(m["role"] == "user" for m in context)
    variables = dict(conversation.prompt_variables) if version is not None and first_turn else {}
    if version is not None and last_user is not None:  # a turn that went through the template keeps its values
        asked_in = message.parent  # the turn this reply answered
        asked = asked_in.variables if asked_in is not None and asked_in.role == Message.Role.USER else None
        variables = dict(asked) if asked else variables
    return {
        "prompt_version": version,
        "input_variables": variables,
        "input_text": "" if variables else (history[last_user]["content"] if last_user is not None else ""),
        "context": context,
        "actual": message.content,
        "model_name": message.model_name,
        "retrieved": (message.retrieval or {}).get("sources", []),
        "source": FailureCase.Source.PLAYGROUND if conversation.kind == "playground" else FailureCase.Source.CHAT,
    }


def case_flag(
    *, user, message: Message, expected: str, tags=(), note: str = "", split: str = "", shared: bool | None = None
) -> FailureCase:
    """A reply flagged as a failure: the four columns from the conversation, the expected answer
    from the person. Only the conversation's owner flags its replies."""
    if message.conversation.owner_id != user.pk or message.role != Message.Role.ASSISTANT:
        raise CasePermissionError("Only the person whose conversation it is can flag its replies.")
    if message.in_progress:
        raise CaseError("wait until the reply is finished", "message")
    prefill = flag_prefill(message)
    fields = {
        "prompt_version": prefill["prompt_version"],
        "input_variables": prefill["input_variables"],
        "input_text": prefill["input_text"],
        "context": prefill["context"],
        "actual": prefill["actual"],
        "model_name": prefill["model_name"],
        "retrieved": prefill["retrieved"],
        "expected": _answer(expected, "expected", required=True),
        "tags": clean_tags(list(tags)),
        "note": _text(note, "note", limit=5_000),
        "split": _choice(split, "split", FailureCase.Split.values, FailureCase.Split.TRAIN),
    }
    unstorable = find_unstorable({k: v for k, v in fields.items() if k != "prompt_version"})
    if unstorable:
        raise CaseError(unstorable[1], unstorable[0])
    with transaction.atomic():
        case = case_create(
            user=user,
            fields=fields,
            source=prefill["source"],
            shared=shared,
            source_message=message,
            source_conversation=message.conversation,
        )
        Message.objects.filter(pk=message.pk).update(flagged_at=timezone.now())
        transaction.on_commit(lambda: reply_flagged.send(sender=Message, message_id=message.pk))
    return case


MAX_PREFERENCE_PAIRS = 8


def cases_prefer(*, user, kept: Message) -> list[FailureCase]:
    """The person kept reply `kept` over its siblings (other replies to the same message): each
    sibling with other text becomes a failure case whose expected answer is the kept reply, so the
    DPO export and fine-tunes get the pair (kept chosen, sibling rejected). Recording it twice adds
    nothing."""
    if kept.conversation.owner_id != user.pk or kept.role != Message.Role.ASSISTANT:
        raise CasePermissionError("Only the person whose conversation it is can choose between its replies.")
    if kept.in_progress or not kept.content.strip():
        raise CaseError("the kept reply must be finished and have text", "message")
    others = [
        m
        for m in Message.objects.select_related("conversation__prompt_version")
        .filter(conversation_id=kept.conversation_id, parent_id=kept.parent_id, role=Message.Role.ASSISTANT)
        .exclude(pk=kept.pk)
        .order_by("pk")
        if not m.in_progress and m.content.strip() and m.content.strip() != kept.content.strip()
    ]
    if not others:
        raise CaseError("there is no other finished reply with different text to prefer it to", "message")
    cases = []
    for other in others[:MAX_PREFERENCE_PAIRS]:
        recorded = FailureCase.objects.filter(source_message=other, expected=kept.content).first()
        cases.append(
            recorded
            or case_flag(
                user=user,
                message=other,
                expected=kept.content,
                tags=["preference"],
                note=f"Another reply (#{kept.pk}) was kept over this one.",
            )
        )
    return cases


def require_case_editor(case: FailureCase, user) -> None:
    if not selectors.can_edit_case(user, case):
        raise CasePermissionError("Only the case's author, the prompt's owner and editors, and staff can change it.")


EDITABLE = ("expected", "note", "split", "status", "tags", "shared", "actual")


def case_update(*, case: FailureCase, user, changes: dict) -> FailureCase:
    require_case_editor(case, user)
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise CaseError(f"cannot be changed here ({', '.join(sorted(unknown))})", "fields")
    unstorable = find_unstorable({k: v for k, v in changes.items() if k != "shared"})
    if unstorable:
        raise CaseError(unstorable[1], unstorable[0])
    if "expected" in changes:
        case.expected = _answer(changes["expected"], "expected", required=True)
    if "actual" in changes:
        case.actual = _answer(changes["actual"], "actual")
    if "note" in changes:
        case.note = _text(changes["note"], "note", limit=5_000)
    if "split" in changes:
        case.split = _choice(changes["split"], "split", FailureCase.Split.values, case.split)
    if "status" in changes:
        case.status = _choice(changes["status"], "status", FailureCase.Status.values, case.status)
    if "shared" in changes:
        if case.created_by_id != user.pk:
            raise CasePermissionError("Only the case's author decides whether it is shared.")
        case.shared = bool(changes["shared"])
    with transaction.atomic():
        case.save()
        if "tags" in changes:
            _set_tags(case, clean_tags(changes["tags"]))
    return case


BULK_ACTIONS = ("add_tag", "remove_tag", "split", "status", "review", "delete")


def cases_bulk(*, user, cases, action: str, value: str = "") -> int:
    """One change to many cases; only cases the user may edit are touched. Returns how many."""
    if action not in BULK_ACTIONS:
        raise CaseError(f"choose one of {', '.join(BULK_ACTIONS)}", "action")
    editable = [case for case in cases if selectors.can_edit_case(user, case)]
    with transaction.atomic():
        if action == "delete":
            FailureCase.objects.filter(pk__in=[c.pk for c in editable]).delete()
        elif action in ("add_tag", "remove_tag"):
            names = clean_tags([value], "tag")
            if not names:
                raise CaseError("give a tag", "tag")
            tag = Tag.objects.get_or_create(name=names[0])[0]
            for case in editable:
                (case.tags.add if action == "add_tag" else case.tags.remove)(tag)
        else:
            choices = {
                "split": FailureCase.Split.values,
                "status": FailureCase.Status.values,
                "review": FailureCase.Review.values,
            }[action]
            value = _choice(value, action, choices, None)
            if value is None:
                raise CaseError("choose a value", action)
            if action == "review" and not user.is_staff:
                editable = [case for case in editable if case.prompt_version and case.prompt.can_edit(user)]
            FailureCase.objects.filter(pk__in=[c.pk for c in editable]).update(
                **{action: value}, updated_at=timezone.now()
            )
    return len(editable)


def selection_save(*, user, name: str, filters: dict) -> CaseSelection:
    name = _text(name, "name", required=True, limit=100).strip()
    clean = selectors.clean_filters(filters)
    selection, _ = CaseSelection.objects.update_or_create(owner=user, name=name, defaults={"filters": clean})
    return selection


def few_shot_examples(cases) -> tuple[object, list[dict]]:
    """The prompt of the selected cases and their (input, expected) as few-shot examples."""
    prompts = {case.prompt_version.prompt_id for case in cases if case.prompt_version_id}
    if len(prompts) != 1 or any(case.prompt_version_id is None for case in cases):
        raise CaseError("choose cases of one prompt to use as its few-shot examples", "cases")
    examples = []
    for case in cases:
        try:
            example = {"input": user_turn(case, case.prompt_version), "output": case.expected}
            if case.input_variables:  # kept as variables: the new version's template renders them on save
                example["variables"] = dict(case.input_variables)
            examples.append(example)
        except (MissingVariablesError, TemplateError) as exc:
            raise CaseError(f"case #{case.pk}: {exc}", "cases") from None
    return cases[0].prompt_version.prompt, examples


def split_held_out(cases: list, share: float, *, seed: int | None = None) -> None:
    """Assign a random `share` (0-1) of `cases` to the eval split (before they are saved)."""
    if not cases or share <= 0:
        return
    chooser = random.Random(seed)
    for case in chooser.sample(cases, round(len(cases) * min(share, 1.0))):
        case["split"] = FailureCase.Split.EVAL


# --- evaluations -------------------------------------------------------------------------------


class EvaluationError(CaseError):
    pass


class EvaluationLimitReached(EvaluationError):
    status = 429


def evaluation_create(*, user, version, model_name: str, filters: dict, scorers) -> Evaluation:
    """Queue an evaluation of `version` with `model_name` over the cases `filters` choose (among
    those `user` may see, of that prompt); refused when the set is empty or the user's queue is full."""
    try:
        clean = clean_scorers(scorers, check_pattern=pattern_error)
    except ScorerError as exc:
        raise EvaluationError(str(exc), "scorers", code=exc.code) from None
    for spec in clean:
        if spec["type"] == "json_schema" and not spec.get("schema") and version.answer_format["type"] != "json_schema":
            raise EvaluationError(
                "json_schema: give a schema, or evaluate a version whose output format is a JSON "
                "Schema (its schema is the default)",
                "scorers",
            )
        if spec["type"] == "llm_judge":
            try:
                _resolve_version(spec["prompt"], spec["version"], lambda name: f"scorers.llm_judge.{name}")
            except CaseError as exc:
                raise EvaluationError(exc.message, exc.field) from None
    available = selectors.available_models()
    if model_name and model_name not in available:
        raise EvaluationError(f"unknown model “{model_name[:100]}”; available: {', '.join(available)}", "model")
    filters = {**selectors.clean_filters(filters), "prompt": version.prompt.slug}
    filters.pop("version", None)  # the cases of every version of the prompt, measured with this one
    cases = selectors.evaluation_cases(user=user, filters=filters)
    total = cases.count()
    if total == 0:
        raise EvaluationError("no failure cases match: flag or import some, or widen the filter", "cases")
    case_ids = list(cases.values_list("id", flat=True))
    shared = not cases.filter(shared=False).exists()
    with transaction.atomic():
        person_lock(user)  # counted and created under the person's lock: simultaneous requests take turns
        queued = Evaluation.objects.filter(created_by=user, status__in=(JobStatus.QUEUED, JobStatus.RUNNING)).count()
        if queued >= settings.EVAL_MAX_QUEUED_PER_USER:
            raise EvaluationLimitReached(
                f"you already have {queued} evaluations queued or running (at most "
                f"{settings.EVAL_MAX_QUEUED_PER_USER}); wait for one to finish",
                "queue",
            )
        evaluation = Evaluation.objects.create(
            prompt_version=version,
            model_name=model_name or available[0],
            case_filters=filters,
            scorers=clean,
            created_by=user,
            total=total,
            case_ids=case_ids,
            shared=shared,
        )
        transaction.on_commit(lambda: jobs.dispatch(Evaluation, evaluation.pk))
    return evaluation


def evaluation_cancel(*, evaluation: Evaluation, user) -> None:
    if evaluation.created_by_id != user.pk and not user.is_staff:
        raise CasePermissionError("Only who started an evaluation (or staff) can cancel it.")
    job_cancel(evaluation)


def result_verdict(*, result: EvaluationResult, user, verdict: str, write_back: bool = False) -> EvaluationResult:
    """A person's pass/fail overrides the scorers; `write_back` makes the output the case's new expected answer."""
    require_case_editor(result.case, user)
    if verdict not in ("pass", "fail", ""):
        raise CaseError("must be pass, fail or empty (back to the scorers)", "verdict")
    with transaction.atomic():
        result.verdict = verdict
        result.verdict_by = user if verdict else None
        result.passed = (verdict == "pass") if verdict else result.scorer_passed
        result.save(update_fields=["verdict", "verdict_by", "passed"])
        evaluation = result.evaluation
        # A person's verdict on a case the model never answered makes it count in the pass rate.
        Evaluation.objects.filter(pk=evaluation.pk).update(
            passed=evaluation.results.filter(passed=True).count(),
            errored=evaluation.results.exclude(error_code="").filter(verdict="").count(),
        )
        if write_back:
            case = result.case
            case.expected = result.output
            if settings.FAILURE_CASE_REVIEW and not user.is_staff:
                case.review = FailureCase.Review.PENDING
            case.save(update_fields=["expected", "review", "updated_at"])
    return result


def cases_mark_fixed(*, user, cases) -> int:
    return cases_bulk(user=user, cases=cases, action="status", value=FailureCase.Status.FIXED)


def digest_of(fields: dict) -> str:
    return input_digest(fields.get("input_variables", {}), fields.get("input_text", ""))


def jobs_sweep() -> None:
    """The sweeper's part for evaluations and imports (studio.sweeping): undelivered ones sent
    again, those of a dead job worker failed; a failed evaluation's cases are withdrawn from the
    model workers."""
    for evaluation_id in jobs.jobs_sweep(Evaluation):
        evaluation_withdraw_cases(evaluation_id)
    jobs.jobs_sweep(ImportDraft)

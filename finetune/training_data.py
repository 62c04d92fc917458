"""What a fine-tune trains on: failure cases as the rows trl reads, and the base model's folder.
Used by the launch form's plan (services) and by the job worker's run (runner).

A case's prompt is what serving sends the model for the case's input through the version the job
trains for: the version's instructions with the passages its retrieval finds (or the template's
`passages`), its few-shot examples, the turns the case was flagged after, the rendered input. It is
built by the serving code itself (chat.selectors.version_reply_messages, the assembly the model
worker uses), so a model is trained on exactly what it will be served.

Tool cases train in the base model's own tool format, as serving shows the version's tools
(studio.llm.tools.prompt_messages): where the chat template takes tools, a row carries them (a
`tools` column, JSON text, which trl's trainers read) and its turns are OpenAI's structured
messages, the expected calls as the completion's `tool_calls`; where it has none (the bundled
SmolLM2-135M's), the prompt's system turn lists the tools and the completion is the calls' Hermes
text, exactly as stored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from chat import selectors as chat_selectors
from evals.prompting import case_messages
from prompts import selectors as prompt_selectors
from prompts.rendering import MissingVariablesError, TemplateError
from studio.llm.loading import prepare_model_folder
from studio.llm.tools import ToolUse, hermes_messages, openai_tools, structured_messages

from .models import FineTuneJob

# Why a case gave no training example (the plan and a refusal say how many each).
LEFT_OUT = {
    "template": "do not fit the version's template (a variable it needs is missing, or it fails)",
    "nothing_found": "find no passage, and the version then answers with its fixed reply without asking the model",
    "no_actual": "have no actual answer of the model (DPO has nothing to prefer)",
    "same_answer": "have an actual answer equal to the expected one (DPO has nothing to prefer)",
}


@dataclass
class TrainingData:
    rows: list[dict] = field(default_factory=list)  # trl's conversational rows
    versions: list[int | None] = field(default_factory=list)  # each row's version number (None: plain chat)
    passages: list[int] = field(default_factory=list)  # each row's retrieved passages, as many as it reads
    left_out: dict[str, int] = field(default_factory=dict)  # LEFT_OUT reason: cases


def base_model_folder(*, convert: bool) -> Path | None:
    folder, _ = prepare_model_folder(settings.LLM_MODEL, Path(settings.LLM_MODEL_CACHE_DIR), convert=convert)
    return Path(folder) if folder else None


def case_prompt(case, *, version, user) -> tuple[list[dict], dict]:
    """The messages serving sends the model for `case`'s input through `version` (None: the case's
    own), retrieving as `user`; (messages, the retrieval record). A case of plain chat (no
    version) is its own context and input, as the chat sent them. Raises the rendering's errors."""
    version = version if version is not None else case.prompt_version
    if version is None:
        return case_messages(case), {}
    variables = {name: value for name, value in (case.input_variables or {}).items() if name in version.variables}
    earlier = [
        m for m in case.context if m.get("role") in ("user", "assistant")
    ]  # the version's instructions replace a system turn
    # Examples chosen per input are chosen for it as serving would, never the case itself.
    return chat_selectors.version_reply_messages(
        version=version,
        user=user,
        variables=variables,
        content=case.input_text,
        earlier=earlier,
        exclude_case_ids=(case.pk,),
    )


def base_takes_tools() -> bool:
    """Whether the base model's chat template shows tools its own way (False until the model is
    prepared: the plan then shows the Hermes form; the job prepares it before assembling)."""
    counter = prompt_selectors.prompt_counter()
    return bool(counter and counter.takes_tools)


def with_tools(prompt: list[dict], answers: list[list[dict]], tool_use: ToolUse | None, *, native: bool):
    """A row's prompt and answers (each one assistant turn, in the stored text form) as the base
    model reads them with `tool_use`'s tools: (prompt, answers, the `tools` column or None). As
    serving renders (tools.prompt_messages): native, OpenAI's structured messages with the tools
    given to the template; else the tools in the system turn and the calls as Hermes text."""
    if not tool_use:
        return prompt, answers, None
    if not native:
        return hermes_messages(prompt, tool_use), answers, None
    # Structured together, so that the answer's call ids follow the prompt's as serving numbers them.
    structured = [structured_messages(prompt + answer) for answer in answers]
    tools = json.dumps(openai_tools(tool_use), ensure_ascii=False)
    return structured[0][:-1], [turns[-1:] for turns in structured], tools


def training_data(cases, objective: str, *, user, version=None, native_tools: bool | None = None) -> TrainingData:
    """The cases as trl reads them, in conversational form (trl applies the base model's own chat
    template). `version`: the one every case is served through; None: each case's own. Retrieval
    searches as `user` (the job's staff member), else as the case's author.
    SFT: prompt → completion (the expected answer; the loss is on it alone). DPO: the expected
    answer chosen over the actual one (cases without an actual answer, or whose actual answer is
    the expected one, are left out). A version's tools are shown in the base model's tool format
    (`native_tools`: its template takes tools; None: base_takes_tools()), see with_tools."""
    data = TrainingData()
    native = base_takes_tools() if native_tools is None else native_tools

    def leave_out(reason: str) -> None:
        data.left_out[reason] = data.left_out.get(reason, 0) + 1

    for case in cases:
        expected = [{"role": "assistant", "content": case.expected}]
        if objective == FineTuneJob.Objective.DPO:
            if not case.actual.strip():
                leave_out("no_actual")
                continue
            if case.actual.strip() == case.expected.strip():
                leave_out("same_answer")
                continue
        try:
            prompt, record = case_prompt(case, version=version, user=user or case.created_by)
        except (MissingVariablesError, TemplateError):
            leave_out("template")
            continue
        if record.get("nothing_passed") and record.get("when_nothing_found") == "say":
            leave_out("nothing_found")
            continue
        served_by = version if version is not None else case.prompt_version
        tool_use = served_by.tool_use if served_by is not None else None
        if objective == FineTuneJob.Objective.DPO:
            rejected = [{"role": "assistant", "content": case.actual}]
            prompt, (chosen, rejected), tools = with_tools(prompt, [expected, rejected], tool_use, native=native)
            row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        else:
            prompt, (completion,), tools = with_tools(prompt, [expected], tool_use, native=native)
            row = {"prompt": prompt, "completion": completion}
        if tools is not None:
            row["tools"] = tools
        data.rows.append(row)
        data.versions.append(served_by.number if served_by is not None else None)
        data.passages.append(len(record.get("sources") or []))
    return data


def training_rows(cases, objective: str, *, user=None, version=None) -> list[dict]:
    return training_data(cases, objective, user=user, version=version).rows


def describe_left_out(left_out: dict[str, int]) -> str:
    """“3 cases do not fit …; 1 has no actual answer …”, or ""."""
    return "; ".join(
        f"{n} case{'s' if n != 1 else ''} {_singular(LEFT_OUT[reason], n)}" for reason, n in left_out.items() if n
    )


def _singular(text: str, n: int) -> str:
    if n != 1:
        return text
    for plural, singular in (("do not", "does not"), ("find", "finds"), ("have", "has")):
        if text.startswith(plural + " "):
            return singular + text[len(plural) :]
    return text


def rows_hash(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def row_tools(row: dict) -> list[dict] | None:
    """The tools a row shows its chat template (its `tools` column, JSON text), or None."""
    return json.loads(row["tools"]) if row.get("tools") else None


def prompt_text(row: dict, counter) -> str:
    """A row's prompt exactly as the model reads it when served: through its chat template, ready
    for the reply (trl renders the prompt of a prompt-completion row the same way)."""
    return counter.render(row["prompt"], add_generation_prompt=True, tools=row_tools(row))


def rendered_text(row: dict, counter) -> str:
    """A row exactly as the model will see it: through its chat template."""
    answer = row.get("completion") or row.get("chosen")
    return counter.render(row["prompt"] + answer, add_generation_prompt=False, tools=row_tools(row))

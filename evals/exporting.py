"""Failure cases as the files trainers read: chat SFT, DPO preference pairs, a flat CSV.

- SFT (`{"messages": [...]}`): the case's own prompt version's instructions as system (no
  few-shot examples), the context it was flagged in, the input as the user turn, the expected
  answer as the assistant turn. A tool case (its version declares tools, or its expected answer
  calls one) is written in OpenAI's structured form, which trainers' chat templates take: the
  expected calls as the assistant turn's `tool_calls` (arguments as JSON text, as OpenAI writes
  them), earlier calls in the context likewise, their results as `role: "tool"` messages, and a
  `tools` column (the version's tools in OpenAI's request shape; absent where it declares none).
  Rows of different tools load in one file: `datasets` reads such mixed columns as JSON (tested).
- DPO (`{"prompt", "chosen", "rejected", "system"}`): the user turn as `prompt`, the expected
  answer as `chosen`, the model's answer as `rejected`, the instructions as `system` (calls
  stay in the stored Hermes text form: `prompt` is text, not a conversation). Cases
  without an actual answer, and those whose actual answer is the expected one, are left out
  (nothing to prefer): `dpo_left_out` counts them for the page and the response headers.
- CSV: one row a case, every column; a cell a spreadsheet would run as a formula (`=`, `+`,
  `-`, `@`, tab, carriage return) is written behind a `'` (studio.spreadsheet_cells), which the
  CSV import takes off again.
All load with `datasets.load_dataset("json" | "csv", data_files=...)` unchanged (tested).
"""

from __future__ import annotations

import csv
import io
import json

from django.db.models import Count, F, Q
from django.db.models.functions import Trim

from prompts.rendering import MissingVariablesError, TemplateError
from studio.llm.tools import CALL_OPEN, openai_tools, read_reply, structured_messages
from studio.spreadsheet_cells import csv_cell_written

from .prompting import case_messages, user_turn
from .tag_cells import tags_cell_joined

FORMATS = {"sft": ("jsonl", "application/jsonl"), "dpo": ("jsonl", "application/jsonl"), "csv": ("csv", "text/csv")}
CSV_COLUMNS = [
    "id",
    "prompt",
    "version",
    "input",
    "context",
    "actual",
    "expected",
    "tags",
    "split",
    "status",
    "source",
    "note",
    "model",
    "created_by",
    "created_at",
]


def sft_line(case) -> dict:
    messages = case_messages(case, with_examples=False) + [{"role": "assistant", "content": case.expected}]
    tool_use = case.prompt_version.tool_use if case.prompt_version else None
    if not tool_use and not calls_tools(case.expected):
        return {"messages": messages}
    line = {"messages": structured_messages(messages, arguments_as="text")}
    if tool_use:
        line["tools"] = openai_tools(tool_use)
    return line


def calls_tools(text: str) -> bool:
    """Whether an answer (in the stored Hermes text form) holds a tool call."""
    return CALL_OPEN in text and bool(read_reply(text)[1])


def dpo_line(case) -> dict:
    version = case.prompt_version
    system = (
        version.instructions if version else next((m["content"] for m in case.context if m.get("role") == "system"), "")
    )
    return {"prompt": user_turn(case, version), "chosen": case.expected, "rejected": case.actual, "system": system}


def csv_row(case) -> list:
    version = case.prompt_version
    return [
        case.pk,
        version.prompt.slug if version else "",
        version.number if version else "",
        json.dumps(case.input_variables, ensure_ascii=False) if case.input_variables else case.input_text,
        json.dumps(case.context, ensure_ascii=False) if case.context else "",
        case.actual,
        case.expected,
        tags_cell_joined(tag.name for tag in case.tags.all()),
        case.split,
        case.status,
        case.source,
        case.note,
        case.model_name,
        case.created_by.get_username(),
        case.created_at.isoformat(),
    ]


def dpo_left_out(cases) -> dict:
    """What a DPO export of `cases` leaves out: {"no_actual": n, "same_answer": n} (whitespace at the ends ignored)."""
    counts = (
        cases.order_by()
        .annotate(actual_text=Trim("actual"), expected_text=Trim("expected"))
        .aggregate(
            no_actual=Count("pk", filter=Q(actual_text="")),
            same_answer=Count("pk", filter=~Q(actual_text="") & Q(actual_text=F("expected_text"))),
        )
    )
    return {"no_actual": counts["no_actual"] or 0, "same_answer": counts["same_answer"] or 0}


def describe_left_out(left_out: dict) -> str:
    parts = []
    if left_out["no_actual"]:
        parts.append(f"{left_out['no_actual']} without the model's actual answer")
    if left_out["same_answer"]:
        parts.append(f"{left_out['same_answer']} whose actual answer equals the expected one")
    return ("DPO leaves out " + " and ".join(parts) + " (nothing to prefer)") if parts else ""


def export_lines(cases, export_format: str):
    """The file's text in pieces (for a streaming response); cases that cannot render are skipped."""
    if export_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        yield buffer.getvalue()
        for case in cases.select_related("created_by").iterator(chunk_size=500):
            buffer.seek(0)
            buffer.truncate()
            writer.writerow([csv_cell_written(cell) for cell in csv_row(case)])
            yield buffer.getvalue()
        return
    line_of = sft_line if export_format == "sft" else dpo_line
    for case in cases:
        if export_format == "dpo" and (not case.actual.strip() or case.actual.strip() == case.expected.strip()):
            continue
        try:
            yield json.dumps(line_of(case), ensure_ascii=False) + "\n"
        except (MissingVariablesError, TemplateError):
            continue

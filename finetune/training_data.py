"""What a fine-tune trains on: failure cases as the rows trl reads, and the base model's folder.
Used by the launch form's plan (services) and by the job worker's run (runner)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from django.conf import settings

from evals.prompting import case_messages
from prompts.rendering import MissingVariablesError, TemplateError
from studio.llm.loading import prepare_model_folder

from .models import FineTuneJob


def base_model_folder(*, convert: bool) -> Path | None:
    folder, _ = prepare_model_folder(settings.LLM_MODEL, Path(settings.LLM_MODEL_CACHE_DIR), convert=convert)
    return Path(folder) if folder else None


def training_rows(cases, objective: str) -> list[dict]:
    """The cases as trl reads them, in conversational form: trl applies the base model's own chat
    template. The system turn is the case's prompt version's instructions; no few-shot examples.
    SFT: prompt → completion (the expected answer; the loss is on it alone). DPO: the expected
    answer chosen over the actual one (cases without an actual answer, or whose actual answer is
    the expected one, are left out)."""
    rows = []
    for case in cases:
        try:
            prompt = case_messages(case, with_examples=False)
        except (MissingVariablesError, TemplateError):
            continue
        expected = [{"role": "assistant", "content": case.expected}]
        if objective == FineTuneJob.Objective.DPO:
            if case.actual.strip() and case.actual.strip() != case.expected.strip():
                rows.append({"prompt": prompt, "chosen": expected,
                             "rejected": [{"role": "assistant", "content": case.actual}]})
        else:
            rows.append({"prompt": prompt, "completion": expected})
    return rows


def rows_hash(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def rendered_text(row: dict, counter) -> str:
    """A row exactly as the model will see it: through its chat template."""
    answer = row.get("completion") or row.get("chosen")
    return counter.render(row["prompt"] + answer, add_generation_prompt=False)

"""Importing failure cases from CSV or JSONL: parse, map columns to fields, check the rows, then
import all of them (or only the valid ones, if the person says so).

A file may hold 20,000 rows, and checking one renders its template: no request checks the
whole file. The mapping page checks the rows it shows (PREVIEW_ROWS a page); the import is a job
on the job workers (`import_run`) that checks every row once and imports, with progress."""

from __future__ import annotations

import csv
import io
import json
import logging

from django.db import transaction

from studio import jobs
from studio.input_checks import InputError, parse_json
from studio.jobs import JobStatus, job_claim, job_end, job_progress
from studio.spreadsheet_cells import csv_cell_read

from . import services
from .models import FailureCase, ImportDraft
from .selectors import cases_visible_to

MAX_ROWS = 20_000
MAX_COLUMNS = 100
PREVIEW_ROWS = 25  # rows the mapping page checks and shows at a time
EXTRA_FIELDS = "\x00extra"  # where a CSV row keeps the cells beyond its header (an error on that row)
KEPT_ERRORS = 500  # errors an import keeps to show
# Fields a column can fill, with the header names guessed for each.
TARGETS = {
    "prompt": ("prompt", "prompt_slug", "slug"),
    "version": ("version", "prompt_version"),
    "input": ("input", "question", "message", "user", "text"),
    "context": ("context", "history"),
    "actual": ("actual", "output", "response", "answer", "model_output", "rejected"),
    "expected": ("expected", "expected_output", "target", "ideal", "reference", "chosen"),
    "tags": ("tags", "tag", "labels"),
    "split": ("split",),
    "note": ("note", "notes", "comment"),
    "model": ("model", "model_name"),
    # The right passages (retrieval judgments): a passage's text, "manual.pdf p. 3", a JSON list of
    # those, or "not in the knowledge base".
    "passages": ("passages", "right_passages", "right_passage", "passage", "sources", "evidence"),
}


class ImportFileError(ValueError):
    pass


def parse_file(filename: str, raw: bytes) -> tuple[list[str], list[dict]]:
    """(columns, rows) of a CSV (header row first) or JSONL (one object a line) file."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"The file is not UTF-8 text (byte {exc.start}).") from None
    if filename.lower().endswith((".jsonl", ".ndjson", ".json")):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = parse_json(line, max_depth=6)
            except InputError as exc:
                raise ImportFileError(f"Line {number}: {exc}") from None
            if not isinstance(row, dict):
                raise ImportFileError(f"Line {number}: each line must be a JSON object.")
            rows.append(row)
            if len(rows) > MAX_ROWS:
                raise ImportFileError(f"The file has more than {MAX_ROWS:,} rows; split it.")
        columns = list(dict.fromkeys(key for row in rows for key in row))
    else:
        if "\x00" in text:
            raise ImportFileError("The file contains NUL bytes: it is not a CSV text file.")
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            columns = [c for c in (reader.fieldnames or []) if c is not None]
            rows = []
            for row in reader:
                extra = row.pop(None, None)  # DictReader keeps cells beyond the header under None
                rows.append({k: csv_cell_read(v) for k, v in row.items()})
                if extra:
                    rows[-1][EXTRA_FIELDS] = len(columns) + len(extra)
                if len(rows) > MAX_ROWS:
                    raise ImportFileError(f"The file has more than {MAX_ROWS:,} rows; split it.")
        except csv.Error as exc:
            raise ImportFileError(f"The CSV does not parse: {exc}") from None
    if not rows:
        raise ImportFileError("The file has no rows.")
    if len(columns) > MAX_COLUMNS:
        raise ImportFileError(f"The file has more than {MAX_COLUMNS} columns.")
    return columns, rows


def guess_mapping(columns: list[str], variables: list[str] = ()) -> dict:
    """Field → column, from the header names."""
    lower = {column.strip().lower(): column for column in columns}
    mapping = {}
    for target, names in TARGETS.items():
        found = next((lower[name] for name in names if name in lower), None)
        if found is not None:
            mapping[target] = found
    for name in variables:
        if name.lower() in lower:
            mapping[f"var:{name}"] = lower[name.lower()]
    return mapping


def _cell(row: dict, column: str | None):
    if not column:
        return None
    value = row.get(column)
    return None if value == "" else value


def _json_cell(value, want: type):
    """A CSV cell holding JSON (an object of variables, a list of messages) as that value."""
    if isinstance(value, str) and value.strip()[:1] in "[{":
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        return parsed if isinstance(parsed, want) else value
    return value


def row_to_case(row: dict, mapping: dict, fixed: dict) -> dict:
    """One row as the API's case object, by the mapping (field → column) and fixed values."""
    variables = {
        target[4:]: _cell(row, column) for target, column in mapping.items() if target.startswith("var:") and column
    }
    raw = {
        "prompt": fixed.get("prompt") or _cell(row, mapping.get("prompt")),
        "version": fixed.get("version") or _cell(row, mapping.get("version")),
        "input": (
            {k: ("" if v is None else str(v)) for k, v in variables.items()}
            if variables
            else _json_cell(_cell(row, mapping.get("input")), dict)
        ),
        "context": _json_cell(_cell(row, mapping.get("context")), list),
        "actual": _cell(row, mapping.get("actual")),
        "expected": _cell(row, mapping.get("expected")),
        "tags": _cell(row, mapping.get("tags")),
        "split": fixed.get("split") or _cell(row, mapping.get("split")),
        "note": _cell(row, mapping.get("note")),
        "model": _cell(row, mapping.get("model")),
        "passages": _cell(row, mapping.get("passages")),
    }
    if isinstance(raw["version"], str) and raw["version"].strip().isdigit():
        raw["version"] = int(raw["version"])
    return raw


def mapping_problem(mapping: dict, fixed: dict) -> str | None:
    """What the person must choose before rows can be checked; None once the mapping says enough."""
    if not fixed.get("prompt"):
        return (
            "Choose the prompt these cases belong to above (or “from the prompt column”, or “none” for "
            "plain-chat cases); the rows are checked once it is chosen."
        )
    if fixed.get("prompt") == "(column)" and not mapping.get("prompt"):
        return "Choose the column that holds each row's prompt."
    if not mapping.get("expected"):
        return "Choose the column that holds the expected answer."
    return None


def check_rows(rows: list[dict], mapping: dict, fixed: dict, *, user, first_number: int = 1, progress=None) -> dict:
    """The rows checked: {"valid": [(row number, fields)], "errors": [(row, column, message)],
    "duplicates": [(row, message)], "total"}. Row numbers count from 1 (the first data row of the
    file; `first_number` when `rows` is a page of it). `progress(done)` is called now and then."""
    if fixed.get("prompt") == "-":  # plain-chat cases: a prompt column is not read
        mapping = {target: column for target, column in mapping.items() if target not in ("prompt", "version")}
    fixed = _fixed_values(fixed)
    valid, errors, duplicates, seen = [], [], [], {}
    versions: dict = {}  # (slug, number) → version: resolved once per check, not once per row
    columns_of = {**{target: column for target, column in mapping.items()}, **{k: "(fixed)" for k in fixed}}
    for number, row in enumerate(rows, start=first_number):
        if progress and (number - first_number) % 200 == 0:
            progress(number - first_number)
        if row.get(EXTRA_FIELDS):
            errors.append((number, "(row)", f"has {row[EXTRA_FIELDS]} fields; the header has {len(row) - 1}"))
            continue
        try:
            fields = services.clean_case(row_to_case(row, mapping, fixed), versions=versions)
        except services.CaseError as exc:
            errors.append((number, _column_at_fault(exc.field, mapping, columns_of), exc.message))
            continue
        key = (getattr(fields["prompt_version"], "pk", None), services.digest_of(fields))
        if key in seen:
            duplicates.append((number, f"the same prompt version and input as row {seen[key]}"))
            continue
        seen[key] = number
        valid.append((number, fields))
    if valid:
        existing = set()
        digests = [k[1] for k in seen]
        for start in range(0, len(digests), 500):  # SQLite takes at most 999 parameters a query
            existing |= set(
                cases_visible_to(user)
                .filter(input_digest__in=digests[start : start + 500])
                .values_list("prompt_version_id", "input_digest")
            )
        kept = []
        for number, fields in valid:
            if (getattr(fields["prompt_version"], "pk", None), services.digest_of(fields)) in existing:
                duplicates.append((number, "a case with the same prompt version and input exists already"))
            else:
                kept.append((number, fields))
        valid = kept
    return {"valid": valid, "errors": errors, "duplicates": sorted(duplicates), "total": len(rows)}


def _fixed_values(fixed: dict) -> dict:
    """The choices that hold for every row, as row_to_case reads them ("(column)" and "-": none)."""
    return {name: value for name, value in fixed.items() if value and value not in ("(column)", "-")}


def _column_at_fault(field: str, mapping: dict, columns_of: dict) -> str:
    """The file's column behind a field in an error (`input.name` → the column mapped to `name`)."""
    head, _, rest = field.partition(".")
    head = head.split("[")[0]
    variable_columns = [column for target, column in mapping.items() if target.startswith("var:") and column]
    if head == "input" and variable_columns:
        return mapping.get(f"var:{rest}") or ", ".join(variable_columns)
    return columns_of.get(head) or head


def import_start(*, draft, mapping: dict, fixed: dict, options: dict) -> None:
    """Queue the import of a draft with the person's choices (kept on the draft, shown again when
    the import is refused)."""
    if not 0 <= options.get("eval_share", 0) <= 1:
        raise services.CaseError("must be a percentage from 0 to 100", "held-out share")
    problem = mapping_problem(mapping, fixed)
    if problem:
        raise services.CaseError(problem, "mapping")
    with transaction.atomic():
        type(draft).objects.filter(pk=draft.pk).update(
            mapping=mapping,
            fixed=fixed,
            options=options,
            outcome={},
            status=JobStatus.QUEUED,
            done=0,
            total=len(draft.rows),
            note="",
            error="",
            cancel_requested=False,
            started_at=None,
            finished_at=None,
            heartbeat_at=None,
            dispatched_at=None,
        )
        transaction.on_commit(lambda: jobs.dispatch(type(draft), draft.pk))
    draft.refresh_from_db()


def import_checked(
    checked: dict, *, user, only_valid: bool, eval_share: float, shared: bool | None = None, seed=None
) -> list[FailureCase]:
    """Import the rows `check_rows` passed: all of them only when no row had an error, unless
    `only_valid`. Duplicates are skipped. `shared`: the person's choice on the import page (None:
    the default of every new case). Returns the cases created."""
    if checked["errors"] and not only_valid:
        raise services.CaseError(
            f"{len(checked['errors'])} rows have errors: fix the file, or choose to import only the valid rows", "file"
        )
    chosen = [dict(fields) for _, fields in checked["valid"]]
    if eval_share:
        services.split_held_out(chosen, eval_share, seed=seed)
    with transaction.atomic():
        return [
            services.case_create(user=user, fields=fields, source=FailureCase.Source.IMPORT, shared=shared)
            for fields in chosen
        ]


class Cancelled(Exception):
    pass


def import_run(draft_id: int) -> None:
    """The import job: every row of the draft checked once, then imported (or nothing, when rows
    have errors and the person did not choose to import only the valid ones). The outcome is kept
    on the draft for its page; the draft's rows stay until it is deleted (a day later)."""
    draft = ImportDraft.objects.select_related("owner").filter(pk=draft_id).first()
    if draft is None or not job_claim(draft):
        return

    def progress(done: int) -> None:
        if job_progress(draft, done=done, note="checking the rows"):
            raise Cancelled

    try:
        checked = check_rows(draft.rows, draft.mapping, draft.fixed, user=draft.owner, progress=progress)
        outcome = {
            "duplicates": len(checked["duplicates"]),
            "refused": len(checked["errors"]),
            "errors": [list(error) for error in checked["errors"][:KEPT_ERRORS]],
            "duplicate_rows": [list(row) for row in checked["duplicates"][:KEPT_ERRORS]],
            "imported": 0,
        }
        only_valid = bool(draft.options.get("only_valid"))
        if checked["errors"] and not only_valid:
            job_end(draft, JobStatus.FINISHED, outcome=outcome)
            return
        job_progress(draft, done=len(draft.rows), note="importing")
        created = import_checked(
            checked,
            user=draft.owner,
            only_valid=only_valid,
            eval_share=float(draft.options.get("eval_share") or 0),
            shared=draft.options.get("shared"),
        )
        outcome["imported"] = len(created)
        job_end(draft, JobStatus.FINISHED, outcome=outcome)
    except Cancelled:
        job_end(draft, JobStatus.CANCELLED)
    except Exception as exc:
        logging.getLogger("evals").exception("import %s failed", draft_id)
        job_end(draft, JobStatus.FAILED, error=f"The import failed: {exc}. Nothing was imported.")

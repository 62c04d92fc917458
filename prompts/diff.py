"""Side-by-side diff of two prompt versions, section by section, words highlighted."""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field

from studio.llm.constraints import OutputFormat

from .examples import source_text


@dataclass
class Side:
    number: int | None  # line number, None where the other side has a line and this one not
    segments: list[tuple[str, bool]] = field(default_factory=list)  # (text, changed)


@dataclass
class Row:
    kind: str  # equal, changed, added, removed
    left: Side
    right: Side


@dataclass
class Section:
    title: str
    rows: list[Row]

    @property
    def changed(self) -> bool:
        return any(row.kind != "equal" for row in self.rows)


def version_text_sections(version) -> dict[str, str]:
    """The parts of a version a person compares, each as plain text."""
    examples = "\n\n".join(
        f"Example {n}\nInput: {example['input']}\nOutput: {example['output']}"
        for n, example in enumerate(version.examples, start=1)
    )
    if version.example_source:
        examples = f"Chosen per input: {source_text(version.example_source)}"
    parameters = "\n".join(f"{name}: {_show(value)}" for name, value in version.parameters.items())
    return {
        "Instructions": version.instructions,
        "Template": version.template,
        "Few-shot examples": examples,
        "Parameters": parameters,
        "Output format": format_text(version.answer_format),
        "Knowledge": retrieval_text(version.retrieval),
        "Tools": tools_text(version.tool_use),
    }


def tools_text(tool_use) -> str:
    """A version's tools as a person reads them (the diff): each tool's name, description and
    parameters (pretty JSON), then which calls a reply may make."""
    if not tool_use:
        return "None: its replies call no tools"
    blocks = []
    for tool in tool_use["tools"]:
        lines = [f"Tool {tool['name']}" + (" (strict)" if tool.get("strict") else "")]
        if tool.get("description"):
            lines.append(f"Description: {tool['description']}")
        lines.append("Parameters: " + json.dumps(tool["parameters"], indent=2, ensure_ascii=False))
        blocks.append("\n".join(lines))
    blocks.append(f"Tool choice: {tool_choice_text(tool_use)}")
    return "\n\n".join(blocks)


def tool_choice_text(tool_use) -> str:
    choice = tool_use["choice"]
    said = {
        "auto": "auto (the model writes text or calls)",
        "none": "none (the tools are shown, no call is made)",
        "required": "required (every reply is a call)",
    }.get(choice) or f"always {tool_use['function']}"
    return said + ("; several calls at once" if tool_use["parallel"] and choice != "none" else "; one call at a time")


def format_text(output_format: OutputFormat) -> str:
    """An output format as a person reads it (the diff, the version page)."""
    kind = output_format.get("type", "text")
    if kind == "json_schema":
        return "JSON Schema:\n" + json.dumps(output_format["schema"], indent=2, ensure_ascii=False)
    if kind == "regex":
        return f"Regular expression: {output_format['pattern']}"
    if kind == "choice":
        return "One of:\n" + "\n".join(output_format["choices"])
    return {"json": "Any JSON object", "text": "Free text"}.get(kind, kind)


def retrieval_text(retrieval: dict | None) -> str:
    """A version's retrieval settings as a person reads them (the diff, the version page)."""
    if not retrieval:
        return "None: this version retrieves nothing"
    bases = ", ".join(
        kb["name"] + ("" if kb.get("id") else " (not in this studio)") for kb in retrieval["knowledge_bases"]
    )
    minimum = "none" if retrieval.get("min_score") is None else f"{retrieval['min_score']:g}"
    query = f"the variable {retrieval['query']}" if retrieval.get("query") else "what the person wrote"
    layout = (
        "the template lays out `passages`"
        if retrieval.get("layout") == "template"
        else "numbered sources in the system turn, cited as [n]"
    )
    return (
        f"Knowledge bases: {bases}\nPassages: top {retrieval['k']}, {retrieval['mode']} search\n"
        f"Minimum score: {minimum}\nQuery: {query}\nLayout: {layout}"
    )


def _show(value) -> str:
    if value is None or value == "":
        return "(default)"
    if isinstance(value, list):
        return ", ".join(repr(item) for item in value) or "(none)"
    return str(value)


def diff_versions(old, new) -> list[Section]:
    old_sections, new_sections = version_text_sections(old), version_text_sections(new)
    return [Section(title, side_by_side(old_sections[title], new_sections[title])) for title in old_sections]


def side_by_side(old_text: str, new_text: str) -> list[Row]:
    old_lines, new_lines = old_text.splitlines(), new_text.splitlines()
    rows = []
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for offset in range(i2 - i1):
                rows.append(
                    Row(
                        "equal",
                        Side(i1 + offset + 1, [(old_lines[i1 + offset], False)]),
                        Side(j1 + offset + 1, [(new_lines[j1 + offset], False)]),
                    )
                )
            continue
        # Replaced blocks pair up line by line; the longer side's rest is added or removed.
        for offset in range(max(i2 - i1, j2 - j1)):
            i, j = i1 + offset, j1 + offset
            if i < i2 and j < j2:
                left, right = word_diff(old_lines[i], new_lines[j])
                rows.append(Row("changed", Side(i + 1, left), Side(j + 1, right)))
            elif i < i2:
                rows.append(Row("removed", Side(i + 1, [(old_lines[i], True)]), Side(None)))
            else:
                rows.append(Row("added", Side(None), Side(j + 1, [(new_lines[j], True)])))
    return rows


def word_diff(old_line: str, new_line: str):
    """(old segments, new segments): each a list of (text, changed), words and spaces kept."""
    old_words, new_words = re.findall(r"\s+|\w+|[^\w\s]", old_line), re.findall(r"\s+|\w+|[^\w\s]", new_line)
    left, right = [], []
    matcher = difflib.SequenceMatcher(None, old_words, new_words, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        changed = tag != "equal"
        if i2 > i1:
            left.append(("".join(old_words[i1:i2]), changed))
        if j2 > j1:
            right.append(("".join(new_words[j1:j2]), changed))
    return left, right

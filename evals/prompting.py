"""A failure case as the messages a model reads: for export (its own version) and for evaluation
(the version being measured)."""

from __future__ import annotations

from prompts.rendering import assembled_messages, render_user_turn


def user_turn(case, version) -> str:
    """The case's input as the user turn: its variables through `version`'s template, or its text."""
    if version is not None and (case.input_variables or not case.input_text):
        return render_user_turn(version.template, case.input_variables)
    return case.input_text


def case_messages(case, version=None, *, with_examples: bool = True) -> list[dict]:
    """System (the version's instructions, or the chat's own system prompt in the context), the
    version's few-shot examples (when asked), the context the case was flagged in, the input."""
    version = version if version is not None else case.prompt_version
    context = [m for m in case.context if m.get("role") in ("user", "assistant", "system")]
    turns = [*context, {"role": "user", "content": user_turn(case, version)}]
    if version is None:
        return assembled_messages(turns=turns)
    return assembled_messages(system=version.instructions, examples=version.examples if with_examples else (),
                              turns=[m for m in turns if m["role"] != "system"])  # the version's instructions replace it

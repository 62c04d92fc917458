"""A failure case as the messages a model reads: for export (its own version) and for evaluation
(the version being measured)."""

from __future__ import annotations

from prompts.rendering import render_user_turn


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
    messages = []
    if version is not None:
        if version.instructions.strip():
            messages.append({"role": "system", "content": version.instructions})
        if with_examples:
            for example in version.examples:
                messages += [{"role": "user", "content": example["input"]},
                             {"role": "assistant", "content": example["output"]}]
        context = [m for m in context if m["role"] != "system"]  # the version's instructions replace it
    messages += [{"role": m["role"], "content": m["content"]} for m in context]
    messages.append({"role": "user", "content": user_turn(case, version)})
    return messages

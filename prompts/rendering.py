"""A prompt version as chat messages: system, few-shot pairs, then the user turn.

The template is Jinja2 in a `SandboxedEnvironment` (no reaching Python objects), with
undefined variables an error rather than a silent blank. The user's text only ever enters
as a variable's value: Jinja2 never parses values, so `{{ secret }}` typed by a user
reaches the model literally.
"""

from __future__ import annotations

import re

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

_environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


class TemplateError(ValueError):
    """The template does not parse; the message says where."""


class MissingVariablesError(ValueError):
    def __init__(self, missing: list[str]):
        self.missing = missing
        names = ", ".join(missing)
        super().__init__(f"Fill in {'the variable' if len(missing) == 1 else 'the variables'} {names}: "
                         "the template uses them and they have no value.")


def _parse(template: str):
    try:
        return _environment.parse(template)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"The template does not parse (line {exc.lineno}): {exc.message}") from None


def check_template(template: str) -> None:
    _parse(template)


def template_variables(template: str) -> list[str]:
    """The variables the template reads from its caller, in order of first use."""
    try:
        ast = _parse(template)
    except TemplateError:
        return []
    declared = meta.find_undeclared_variables(ast)
    ordered = [node.name for node in ast.find_all(nodes.Name) if node.ctx == "load" and node.name in declared]
    return list(dict.fromkeys(ordered))


def render_user_turn(template: str, variables: dict) -> str:
    # Blank values count as missing: a form's empty field must not become a silent blank.
    # (A variable the template gives a `default` may stay empty.)
    given = {name: value for name, value in variables.items() if _is_name(name) and _has_value(value)}
    try:
        return _environment.from_string(template).render(**given)
    except UndefinedError:
        raise MissingVariablesError(_required_but_missing(template, given) or ["(unknown)"]) from None
    except TemplateSyntaxError as exc:
        raise TemplateError(f"The template does not parse (line {exc.lineno}): {exc.message}") from None
    except Exception as exc:  # sandbox refusals, type errors inside the template
        raise TemplateError(f"The template failed to render: {exc}") from None


def _required_but_missing(template: str, given: dict) -> list[str]:
    """The absent variables the template cannot do without (`default` makes one optional):
    each is tried alone missing, with the others filled in."""
    absent = [name for name in template_variables(template) if name not in given]
    compiled = _environment.from_string(template)
    required = []
    for name in absent:
        try:
            compiled.render(**given, **{other: "x" for other in absent if other != name})
        except UndefinedError:
            required.append(name)
        except Exception:
            pass
    return required


def render_messages(*, instructions: str, examples: list[dict], template: str, variables: dict) -> list[dict]:
    messages = []
    if instructions.strip():
        messages.append({"role": "system", "content": instructions})
    for example in examples:
        messages.append({"role": "user", "content": example["input"]})
        messages.append({"role": "assistant", "content": example["output"]})
    messages.append({"role": "user", "content": render_user_turn(template, variables)})
    return messages


def _has_value(value) -> bool:
    return value is not None and (not isinstance(value, str) or value.strip() != "")


def _is_name(key) -> bool:
    return isinstance(key, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) is not None

"""The Jinja2 engine that renders prompt templates, bounded by construction.

Templates are written by any user and rendered whenever anyone opens the prompt, so a
template must never be able to freeze or exhaust the process that renders it. Jinja2's
sandbox stops templates from reaching Python objects; this module also bounds what they
compute:

- arithmetic and repetition whose result would be huge (`9**(9**8)`, `'x' * 10**9`) are
  refused before they are computed, and never folded while compiling (Jinja folds constant
  expressions at compile time unless the operator is intercepted);
- every string, list and text conversion a template makes is capped (`MAX_VALUE_CHARS`,
  `MAX_ITEMS`), the filters that can amplify their input (`join`, `center`, `indent`,
  `replace`, `wordwrap`, `format`, `batch`, `sum`, ...) are checked before they run, and
  the output is cut off at `MAX_OUTPUT_CHARS`;
- loop iterations, calls and operators share one budget per render (`MAX_STEPS`).

It runs inside the sandbox processes (`sandbox.py`), which add the hard guarantee: a
wall-clock limit and a memory cap, whatever a template finds to do.

Django-free on purpose: the sandbox process imports only this module, Jinja2 and what compiles
patterns and formats.
"""

from __future__ import annotations

import contextvars
import functools
import math
import re

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, filters, meta, nodes
from jinja2.compiler import CodeGenerator
from jinja2.runtime import Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_context
from jinja2.visitor import NodeTransformer

MAX_OUTPUT_CHARS = 100_000  # a rendered user turn
MAX_VALUE_CHARS = 100_000  # any string a template builds
MAX_ITEMS = 100_000  # any list a template builds
MAX_INT_BITS = 4_096  # about 1,200 digits
MAX_STEPS = 1_000_000  # loop iterations, calls and operators in one render (well under a second)
MAX_NESTING = 20  # containers inside containers, when measuring their text
MAX_CAPTURED_CHARS = 2_000_000  # all text captured in one render (set … endset, macros, filter blocks)


class TemplateError(ValueError):
    """The template does not parse or fails to render; the message says where or why."""


class TemplateLimitError(TemplateError):
    """The template would compute something too large or too long: refused, not computed."""


class MissingVariablesError(ValueError):
    def __init__(self, missing: list[str]):
        self.missing = missing
        names = ", ".join(missing)
        super().__init__(
            f"Fill in {'the variable' if len(missing) == 1 else 'the variables'} {names}: "
            "the template uses them and they have no value."
        )


# --- the work budget ------------------------------------------------------------------------

_steps_left: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("template_steps_left", default=None)


def _step(count: int = 1) -> None:
    budget = _steps_left.get()
    if budget is None:  # compiling: constant folding runs the same checks, without a budget
        return
    budget[0] -= count
    if budget[0] < 0:
        raise TemplateLimitError(
            f"The template does more than {MAX_STEPS:,} steps (loop rounds, calls and "
            "operations) in one render; simplify its loops."
        )


# --- sizes, measured without building anything ----------------------------------------------


def _text_size(value, limit: int = MAX_VALUE_CHARS, depth: int = 0) -> int:
    """About how many characters `str(value)` would be; stops counting past `limit`."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() * 30103 // 100000 + 2  # log10(2) digits a bit
    if isinstance(value, float):
        return 25
    if isinstance(value, (list, tuple, set, frozenset, dict, range)):
        if depth > MAX_NESTING:
            return limit + 1
        if isinstance(value, range):
            return len(value) * 8
        total = 2
        items = value.items() if isinstance(value, dict) else value
        for item in items:
            total += _text_size(item, limit - total, depth + 1) + 2
            if total > limit:
                return total
        return total
    return 0  # other objects (Undefined, macros): their str() is short or fails on its own


def _check_text(size: int, what: str) -> None:
    if size > MAX_VALUE_CHARS:
        raise TemplateLimitError(
            f"{what} would be about {size:,} characters; a template may build at most {MAX_VALUE_CHARS:,}."
        )


def _check_items(count: int, what: str) -> None:
    if count > MAX_ITEMS:
        raise TemplateLimitError(f"{what} would hold {count:,} items; a template may build at most {MAX_ITEMS:,}.")


def _check_int_bits(bits: float, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateLimitError(
            f"{what} would be a number of about {int(bits * 0.30103):,} digits; "
            f"a template may compute at most about {int(MAX_INT_BITS * 0.30103):,}."
        )


def _is_sequence(value) -> bool:
    return isinstance(value, (str, list, tuple))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# printf-style specifiers: %[(key)][flags][width][.precision]type
_PRINTF_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(template_text: str, arguments) -> None:
    for width, precision in _PRINTF_FIELD.findall(template_text):
        for number in (width, precision):
            if number == "*" or (number and (len(number) > 6 or int(number) > MAX_VALUE_CHARS)):
                raise TemplateLimitError(
                    f"A %-format width or precision of {number} is too large; a template may "
                    f"build at most {MAX_VALUE_CHARS:,} characters."
                )
    _check_text(len(template_text) + _text_size(arguments, MAX_VALUE_CHARS), "A %-formatted text")


# --- operators ------------------------------------------------------------------------------


def _check_binop(operator: str, left, right) -> None:
    if operator == "**" and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
        _check_int_bits(right * math.log2(abs(left)), f"{left} ** {right}")
    elif operator == "*":
        if _is_sequence(left) and _is_int(right) or _is_sequence(right) and _is_int(left):
            sequence, times = (left, right) if _is_sequence(left) else (right, left)
            if isinstance(sequence, str):
                _check_text(len(sequence) * max(times, 0), "Repeating a text")
            else:
                _check_items(len(sequence) * max(times, 0), "Repeating a list")
        elif _is_int(left) and _is_int(right):
            _check_int_bits(left.bit_length() + right.bit_length(), "A product")
    elif operator == "+" and _is_sequence(left) and _is_sequence(right):
        if isinstance(left, str):
            _check_text(len(left) + len(right), "Joining two texts")
        else:
            _check_items(len(left) + len(right), "Joining two lists")
    elif operator == "%" and isinstance(left, str):
        _check_printf(left, right)


# --- filters --------------------------------------------------------------------------------

# Filters that work on a list as a list; every other filter turns its input into text.
_CONTAINER_FILTERS = {
    "attr",
    "batch",
    "count",
    "default",
    "d",
    "dictsort",
    "first",
    "groupby",
    "items",
    "join",
    "last",
    "length",
    "list",
    "map",
    "max",
    "min",
    "random",
    "reject",
    "rejectattr",
    "reverse",
    "select",
    "selectattr",
    "slice",
    "sort",
    "sum",
    "unique",
    "abs",
    "int",
    "float",
    "round",
    "bool",
    "filesizeformat",
}


def _amplification_check(name: str, args: tuple, kwargs: dict) -> None:
    """Refuse a filter call whose result would be too large, before it runs."""
    value = args[0] if args else None

    def arg(position, keyword, default=None):
        return args[position] if len(args) > position else kwargs.get(keyword, default)

    if name not in _CONTAINER_FILTERS:
        _check_text(_text_size(value), f"The text given to |{name}")
    if name == "center":
        width = arg(1, "width", 80)
        if _is_int(width):
            _check_text(max(width, 0), "|center")
    elif name == "indent" and isinstance(value, str):
        width = arg(1, "width", 4)
        width_chars = len(width) if isinstance(width, str) else width if _is_int(width) else 0
        _check_text(len(value) + (value.count("\n") + 1) * max(width_chars, 0), "|indent")
    elif name == "wordwrap" and isinstance(value, str):
        width, wrapstring = arg(1, "width", 79), arg(3, "wrapstring") or "\n"
        if _is_int(width) and width > 0 and isinstance(wrapstring, str):
            _check_text(len(value) + (len(value) // width + 1) * len(wrapstring), "|wordwrap")
    elif name == "replace" and isinstance(value, str):
        old, new = arg(1, "old", ""), arg(2, "new", "")
        if isinstance(old, str) and isinstance(new, str):
            occurrences = value.count(old) if old else len(value) + 1
            _check_text(len(value) + occurrences * max(len(new) - len(old), 0), "|replace")
    elif name == "format" and isinstance(value, str):
        _check_printf(value, args[1:] or kwargs)
    elif name in ("batch", "slice"):
        count, fill_with = arg(1, "linecount" if name == "batch" else "slices"), arg(2, "fill_with")
        if _is_int(count) and (fill_with is not None or name == "slice"):
            _check_items(count, f"|{name}")
    elif name == "sum" and isinstance(value, (list, tuple)):
        start = arg(3, "start", 0)
        if _is_sequence(start):
            _check_items(len(start) + sum(len(item) for item in value if _is_sequence(item)), "|sum")


@pass_context
def _bounded_join(context, value, d="", attribute=None):
    """`join` that measures the joined text before building it."""
    if attribute is not None:
        value = map(filters.make_attrgetter(context.environment, attribute), value)
    parts, size = [], 0
    for item in value:
        _step()
        part = item if isinstance(item, str) else None
        size += (len(part) if part is not None else _text_size(item, MAX_VALUE_CHARS - size)) + len(str(d))
        _check_text(size, "|join")
        parts.append(item)
    return filters.do_join(context.eval_ctx, parts, d)


def _bounded_filter(name: str, function):
    @functools.wraps(function)  # keeps Jinja's pass_context / pass_environment marks
    def bounded(*args, **kwargs):
        _step()
        passes = getattr(function, "jinja_pass_arg", None)
        _amplification_check(name, args[1:] if passes else args, kwargs)
        result = function(*args, **kwargs)
        if isinstance(result, str):
            _check_text(len(result), f"The result of |{name}")
        elif isinstance(result, (list, tuple)):
            _check_items(len(result), f"The result of |{name}")
        return result

    return bounded


@pass_context
def _loop_budget(context, iterable):
    """Wrapped around every `{% for %}` iterable: each round costs a step."""
    for item in iterable:
        _step()
        yield item


@pass_context
def _bounded_concat(context, values):
    """The `~` operator, measured before the text is built."""
    size = 0
    for value in values:
        size += _text_size(value, MAX_VALUE_CHARS - size)
        _check_text(size, "Joining texts with ~")
    _step()
    return "".join(str(value) for value in values)


def _bounded_output(value):
    """Every `{{ ... }}` goes through here (Jinja's `finalize`) before it becomes text."""
    _check_text(_text_size(value), "A value written by the template")
    return value


class _BoundLoopsAndConcatenation(NodeTransformer):
    """After parsing: each loop's iterable through `_loop_budget`, each `~` through `_bounded_concat`."""

    def __init__(self, environment):
        self.environment = environment

    def _filter(self, name, node, lineno):
        wrapped = nodes.Filter(node, name, [], [], None, None, lineno=lineno)
        wrapped.set_environment(self.environment)
        return wrapped

    def visit_For(self, node):
        self.generic_visit(node)
        node.iter = self._filter("studio_loop_budget", node.iter, node.lineno)
        return node

    def visit_Concat(self, node):
        self.generic_visit(node)
        items = nodes.List(node.nodes, lineno=node.lineno)
        items.set_environment(self.environment)
        return self._filter("studio_concat", items, node.lineno)


_captured_left: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "template_captured_left", default=None
)


class _BoundedBuffer(list):
    """Where a captured block collects its text (`{% set x %}…{% endset %}`, a macro's body, a
    `{% filter %}` block, a call block): capped like every other value the template builds, and
    all captures of one render share MAX_CAPTURED_CHARS, so a loop of captures is bounded too."""

    def __init__(self):
        super().__init__()
        self.size = 0

    def append(self, value):
        added = _text_size(value, MAX_VALUE_CHARS - self.size + 1)
        self.size += added
        _check_text(self.size, "A captured block (set … endset, a macro, a filter block)")
        budget = _captured_left.get()
        if budget is not None:
            budget[0] -= added
            if budget[0] < 0:
                raise TemplateLimitError(
                    f"The template captures more than {MAX_CAPTURED_CHARS:,} characters in "
                    "blocks (set … endset, macros) in one render; simplify its loops."
                )
        super().append(value)

    def extend(self, values):
        for value in values:
            self.append(value)


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator with every capture buffer a _BoundedBuffer (Jinja collects a block's
    text in a plain list, which no filter sees until the block ends)."""

    def buffer(self, frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.studio_buffer()")


# Text methods a template may call; the others can build huge text (ljust, center, zfill,
# expandtabs, join, replace, format, ...) and have bounded filters instead.
_SAFE_TEXT_METHODS = {
    "capitalize",
    "casefold",
    "count",
    "endswith",
    "find",
    "index",
    "isalnum",
    "isalpha",
    "isdecimal",
    "isdigit",
    "islower",
    "isnumeric",
    "isspace",
    "istitle",
    "isupper",
    "lower",
    "lstrip",
    "partition",
    "removeprefix",
    "removesuffix",
    "rfind",
    "rindex",
    "rpartition",
    "rsplit",
    "rstrip",
    "split",
    "splitlines",
    "startswith",
    "strip",
    "swapcase",
    "title",
    "upper",
}


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    # Intercepted operators go through call_binop and are never folded at compile time.
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    code_generator_class = _BoundedCodeGenerator
    studio_buffer = _BoundedBuffer

    def __init__(self):
        super().__init__(
            undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True, finalize=_bounded_output
        )
        self.globals.pop("lipsum", None)  # lipsum(n) writes n paragraphs
        self.filters = {name: _bounded_filter(name, function) for name, function in self.filters.items()}
        self.filters.update(
            join=_bounded_filter("join", _bounded_join), studio_loop_budget=_loop_budget, studio_concat=_bounded_concat
        )

    def _parse(self, source, name, filename):
        return _BoundLoopsAndConcatenation(self).visit(super()._parse(source, name, filename))

    def call_binop(self, context, operator, left, right):
        _step()
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's own signature)
        # A macro call costs about as much as 20 loop rounds (measured): count it so.
        _step(20 if isinstance(__obj, Macro) else 1)
        return super().call(__context, __obj, *args, **kwargs)

    def is_safe_attribute(self, obj, attr, value) -> bool:
        if isinstance(obj, str) and callable(value) and attr not in _SAFE_TEXT_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value):
        return None  # str.format is refused by is_safe_attribute; the format filter is bounded


_environment = BoundedEnvironment()


# --- what the sandbox process runs ----------------------------------------------------------


def _parse(template: str):
    try:
        return _environment.parse(template)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"The template does not parse (line {exc.lineno}): {exc.message}") from None
    except RecursionError:
        raise TemplateError("The template is nested too deeply to parse.") from None
    except TemplateError:
        raise
    except Exception as exc:  # e.g. an integer literal longer than Python reads
        raise TemplateError(f"The template does not parse: {exc}") from None


def template_variables(template: str) -> list[str]:
    """The variables the template reads from its caller, in order of first use (checks it parses)."""
    ast = _parse(template)
    declared = meta.find_undeclared_variables(ast)
    ordered = [node.name for node in ast.find_all(nodes.Name) if node.ctx == "load" and node.name in declared]
    return list(dict.fromkeys(ordered))


def _compile(template: str):
    try:
        return _environment.from_string(template)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"The template does not parse (line {exc.lineno}): {exc.message}") from None
    except TemplateError:
        raise
    except Exception as exc:
        raise TemplateError(f"The template does not compile: {exc}") from None


def _render_bounded(compiled, values: dict) -> str:
    """Render with a fresh step budget, stopping once the output passes MAX_OUTPUT_CHARS."""
    token = _steps_left.set([MAX_STEPS])
    captured = _captured_left.set([MAX_CAPTURED_CHARS])
    try:
        parts, size = [], 0
        for chunk in compiled.generate(**values):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateLimitError(f"The rendered text is longer than {MAX_OUTPUT_CHARS:,} characters.")
            parts.append(chunk)
        return "".join(parts)
    finally:
        _steps_left.reset(token)
        _captured_left.reset(captured)


def render_user_turn(template: str, variables: dict) -> str:
    # Blank values count as missing: a form's empty field must not become a silent blank.
    # (A variable the template gives a `default` may stay empty.)
    given = {name: value for name, value in variables.items() if _is_name(name) and _has_value(value)}
    compiled = _compile(template)
    try:
        return _render_bounded(compiled, given)
    except UndefinedError:
        raise MissingVariablesError(_required_but_missing(template, compiled, given) or ["(unknown)"]) from None
    except TemplateError:
        raise
    except RecursionError:
        raise TemplateLimitError("The template calls itself too deeply (a recursive macro?).") from None
    except MemoryError:
        raise TemplateLimitError("The template needs more memory than a render may use.") from None
    except Exception as exc:  # sandbox refusals, type errors inside the template
        raise TemplateError(f"The template failed to render: {exc}") from None


def _required_but_missing(template: str, compiled, given: dict) -> list[str]:
    """The absent variables the template cannot do without (`default` makes one optional):
    each is tried alone missing, with the others filled in."""
    absent = [name for name in template_variables(template) if name not in given]
    required = []
    for name in absent:
        try:
            _render_bounded(compiled, {**given, **{other: "x" for other in absent if other != name}})
        except UndefinedError:
            required.append(name)
        except Exception:  # noqa: BLE001  a probe: failing for another reason (a limit, a type error with the
            continue  # sample "x") says nothing about this variable; the caller reports what the render said
    return required


def trial_render(template: str) -> str | None:
    """At save time: render once with every variable set to a sample value. The message of a
    limit the template hits (a huge number, an endless loop) or None. Other failures are left
    to render time: they may depend on the values people give."""
    try:
        render_user_turn(template, {name: "x" for name in template_variables(template)})
    except TemplateLimitError as exc:
        return str(exc)
    except (TemplateError, MissingVariablesError):
        return None
    return None


def _has_value(value) -> bool:
    return value is not None and (not isinstance(value, str) or value.strip() != "")


def _is_name(key) -> bool:
    return isinstance(key, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) is not None

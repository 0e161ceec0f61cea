"""Sandboxed Jinja2 templating with names checked before anything is rendered.

Templates see ``params``, ``targets`` (non-secret fields only), the ``for_each``
item under its ``as`` name, and ``steps.<id>.outputs.<name>``. A template that
reads ``steps`` cannot be rendered until run time: the compiler leaves it as
written (and checks that the step it names is among the dependencies), and the
engine renders it when the step starts.

Names are checked on the template's syntax tree first, so a typo is reported with
a suggestion rather than as Jinja's ``'dict object' has no attribute``.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache, wraps
from itertools import islice
from typing import Any

from drctl.compiler import references
from drctl.compiler.references import NotPlain, Ref

_SINGLE_EXPR = re.compile(r"^\{\{-?\s*(.*?)\s*-?\}\}$", re.DOTALL)


class TemplateProblem(Exception):
    """Raised for a template that cannot be parsed or names something unknown."""

    def __init__(self, message: str, *, syntax: bool = False, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.syntax = syntax
        self.hint = hint


@dataclass(frozen=True)
class Reference:
    """A dotted name a template reads, e.g. ``("params", "max_lag")``."""

    parts: tuple[str, ...]


@dataclass(frozen=True)
class TemplateInfo:
    """What a template reads, found on its syntax tree."""

    references: tuple[Reference, ...]
    free_names: frozenset[str]
    #: Step ids read through ``steps.<id>`` (only known at run time).
    step_refs: frozenset[str] = field(default=frozenset())

    @property
    def deferred(self) -> bool:
        return bool(self.step_refs) or "steps" in self.free_names


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value or "{#" in value


#: What one rendering of one template may build and do. A budget, not a list of
#: forbidden operations: every value an operation takes or returns is measured
#: (characters of text, items of lists and maps, bits of integers), operations whose
#: result can outgrow their inputs (padding, widths, ``%``, ``join``, ``replace``,
#: ``*``, ``**``) are estimated before they run, and every intercepted operation
#: counts against the work budget.
MAX_SIZE = 1_000_000
MAX_WORK = 100_000
MAX_INT_BITS = 4096
#: Templates are short expressions; these bound lexing, parsing, compiling and
#: rendering (Jinja's lexer alone takes about 30 ms per 1,000 characters of code).
MAX_TEMPLATE_CHARS = 32_768
MAX_CODE_CHARS = 4_096
MAX_TEMPLATE_DEPTH = 48
#: ``lipsum`` is random text: a plan must be byte-stable, so it is not offered.
_NONDETERMINISTIC = ("lipsum", "random", "shuffle")


class BudgetExceeded(Exception):
    """Raised inside rendering when a template would go over its budget."""


class _Budget:
    """The work done and output written by one rendering (mutable, per render)."""

    __slots__ = ("output", "work")

    def __init__(self) -> None:
        self.work = 0
        self.output = 0

    def step(self) -> None:
        self.work += 1
        if self.work > MAX_WORK:
            raise BudgetExceeded(f"the template does more than {MAX_WORK} operations")

    def emit(self, value: Any) -> None:
        self.output += measure(value)
        if self.output > MAX_SIZE:
            raise BudgetExceeded(f"the template's output would be larger than {MAX_SIZE}")


_BUDGET: ContextVar[_Budget | None] = ContextVar("drctl_template_budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:  # compile-time constant folding outside render(): a fresh one
        budget = _Budget()
        _BUDGET.set(budget)
    return budget


def measure(value: Any, limit: int = MAX_SIZE) -> int:
    """The size of ``value`` in budget units, counting no further than just past ``limit``.

    Text counts its characters, a list or map one per item plus its items' sizes
    (shared items count every time: that is what rendering or joining them costs),
    an integer its bits over 64 (as characters of its digits, roughly), anything else 1.
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, bool) or item is None or isinstance(item, float):
            total += 1
        elif isinstance(item, int):
            bits = item.bit_length()
            if bits > MAX_INT_BITS:
                raise BudgetExceeded(f"a number larger than {MAX_INT_BITS} bits")
            total += 1 + bits // 3
        elif isinstance(item, dict):
            total += 1
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 1
            stack.extend(item)
        else:
            total += 1
        if total > limit:
            return total
    return total


def _check(value: Any, what: str = "the result") -> Any:
    if measure(value) > MAX_SIZE:
        raise BudgetExceeded(f"{what} would be larger than {MAX_SIZE}")
    return value


def _int(value: Any) -> int:
    return abs(value) if isinstance(value, int) and not isinstance(value, bool) else 0


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _percent_estimate(fmt: str, args: Any) -> int:
    """An upper bound on ``fmt % args``: the text, the arguments, every width and precision."""
    values = (
        list(args.values())
        if isinstance(args, dict)
        else (list(args) if isinstance(args, tuple) else [args])
    )
    star = sum(_int(v) for v in values)
    total = len(fmt) + measure(values)
    for match in _PERCENT_SPEC.finditer(fmt):
        for part in match.groups():
            if part == "*":
                total += star
            elif part:
                total += int(part)
    return total


def _format_estimate(fmt: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """An upper bound on ``fmt.format(*args, **kwargs)``, widths and precisions included."""
    from string import Formatter

    values = [*args, *kwargs.values()]
    nested = sum(_int(v) for v in values)
    total = len(fmt) + measure(values)
    try:
        parsed = list(Formatter().parse(fmt))
    except ValueError:
        return total  # str.format will refuse it itself
    for _, _, spec, _ in parsed:
        if spec:
            total += sum(int(d) for d in _DIGITS.findall(spec))
            if "{" in spec:
                total += nested
    return total


def _materialize(value: Any) -> Any:
    """A lazy iterable (``map``, ``select``) as a list, refusing one that is too long."""
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset) or not hasattr(
        value, "__iter__"
    ):
        return value
    items = list(islice(value, MAX_SIZE + 1))
    if len(items) > MAX_SIZE:
        raise BudgetExceeded(f"a sequence longer than {MAX_SIZE}")
    return items


def _count(value: Any) -> int:
    return len(value) if isinstance(value, list | tuple | dict | set | frozenset) else 1


def _growth(name: str, subject: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """An upper bound on the size of ``subject.name(*args)`` (a str method or a filter).

    Only operations whose result can be larger than their inputs need one; for the
    rest this returns 0 and their result is measured after they return.
    """
    text = subject if isinstance(subject, str) else ""
    first = args[0] if args else None
    size = len(text)
    if name in ("ljust", "rjust", "center", "zfill"):
        return size + _int(kwargs.get("width", first))
    if name == "expandtabs":
        return size * max(1, _int(kwargs.get("tabsize", first if args else 8)))
    if name == "replace" and len(args) >= 2:
        return size + (size + 1) * measure(args[1])
    if name == "join":
        items = kwargs.get("iterable", first) if isinstance(subject, str) else subject
        sep = text if isinstance(subject, str) else (first if isinstance(first, str) else "")
        return measure(items) + len(sep) * _count(items)
    if name == "translate" and isinstance(first, dict):
        return size * max([1, *(measure(v) for v in first.values())])
    if name in ("format", "format_map") and isinstance(subject, str):
        if name == "format_map" and isinstance(first, dict):
            return _format_estimate(text, (), first)
        return _format_estimate(text, args, kwargs)
    if name == "indent":
        width = kwargs.get("width", first if args else 4)
        pad = measure(width) if isinstance(width, str) else _int(width)
        return size + pad * (text.count("\n") + 1)
    if name == "wordwrap":
        wrap = kwargs.get("wrapstring", args[2] if len(args) > 2 else "\n")
        return size * (1 + measure(wrap))
    if name == "batch":
        return measure(subject) + _int(kwargs.get("linecount", first))
    if name == "slice":
        return measure(subject) + _int(kwargs.get("slices", first))
    if name in ("tojson", "pprint"):
        return measure(subject) * (1 + _int(kwargs.get("indent", first)))
    if name == "truncate":
        return size + measure(kwargs.get("end", args[2] if len(args) > 2 else ""))
    return 0


def _binop_refusal(operator: str, left: Any, right: Any) -> str | None:
    """Why ``left <operator> right`` would go over the budget, or None if it would not."""
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "**" and ints and right > 0 and abs(left) > 1:
        if left.bit_length() * right > MAX_INT_BITS:
            return (
                f"a {left.bit_length()}-bit number to the power {right} would be "
                f"larger than {MAX_INT_BITS} bits"
            )
    elif operator == "*" and ints:
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            return f"the product would be larger than {MAX_INT_BITS} bits"
    elif operator == "*":
        for seq, times in ((left, right), (right, left)):
            sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
            if sized and measure(seq) * times > MAX_SIZE:
                return f"the result would be longer than {MAX_SIZE}"
    elif operator == "%" and isinstance(left, str) and _percent_estimate(left, right) > MAX_SIZE:
        return f"the formatted text would be longer than {MAX_SIZE}"
    return None


def _bounded_filter(name: str, func: Any) -> Any:
    """``func`` (a filter) with its inputs, its estimated result and its result measured."""
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.step()
        lead, rest = args[:skip], tuple(_materialize(a) for a in args[skip:])
        _check([*rest, *kwargs.values()], f"the input of the {name} filter")
        subject, extra = (rest[0], rest[1:]) if rest else (None, ())
        if name == "format" and isinstance(subject, str):
            estimate = _percent_estimate(subject, kwargs or extra)
        else:
            estimate = _growth(name, subject, extra, kwargs)
        if estimate > MAX_SIZE:
            raise BudgetExceeded(f"the {name} filter's result would be larger than {MAX_SIZE}")
        return _check(func(*lead, *rest, **kwargs), f"the {name} filter's result")

    return bounded


@lru_cache(maxsize=1)
def environment() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.compiler import CodeGenerator
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedCodeGenerator(CodeGenerator):
        """Routes ``~`` through the environment, so concatenation is measured too."""

        def visit_Concat(self, node: Any, frame: Any) -> None:
            self.write("environment.call_concat((")
            for arg in node.nodes:
                self.visit(arg, frame)
                self.write(", ")
            self.write("))")

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        """The sandbox, with every intercepted operation charged to the render's budget.

        Loops are refused before rendering (see ``analyze``); calls, attribute and item
        reads, binary operators, filters, ``~`` and output all go through here.
        """

        code_generator_class = BoundedCodeGenerator
        intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _budget().step()
            refusal = _binop_refusal(operator, left, right)
            if refusal is not None:
                raise BudgetExceeded(refusal)
            return _check(super().call_binop(context, operator, left, right))

        def call_concat(self, parts: tuple[Any, ...]) -> str:
            _budget().step()
            _check(parts, "the joined text")
            return "".join(str(p) for p in parts)

        def getattr(self, obj: Any, attribute: str) -> Any:
            _budget().step()
            return super().getattr(obj, attribute)

        def getitem(self, obj: Any, argument: Any) -> Any:
            _budget().step()
            return super().getitem(obj, argument)

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            _budget().step()
            args = tuple(_materialize(a) for a in args)
            method = getattr(__obj, "__wrapped__", __obj)
            subject = getattr(method, "__self__", None)
            _check([subject, *args, *kwargs.values()], "the call's input")
            name = getattr(method, "__name__", "")
            if isinstance(subject, str) and _growth(name, subject, args, kwargs) > MAX_SIZE:
                raise BudgetExceeded(f"{name}() would give a result larger than {MAX_SIZE}")
            return _check(super().call(__context, __obj, *args, **kwargs))

    env = BoundedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_finalize,
    )
    for name in _NONDETERMINISTIC:
        env.filters.pop(name, None)
        env.globals.pop(name, None)
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}
    return env


def _finalize(value: Any) -> Any:
    _budget().emit(value)
    return value


@lru_cache(maxsize=4096)
def analyze(text: str) -> TemplateInfo:
    """Parse ``text`` and list the names it reads; raises TemplateProblem on bad syntax."""
    if len(text) > MAX_TEMPLATE_CHARS:
        raise TemplateProblem(
            f"template syntax: longer than {MAX_TEMPLATE_CHARS} characters", syntax=True
        )
    if _code_chars(text) > MAX_CODE_CHARS:
        raise TemplateProblem(
            f"template syntax: more than {MAX_CODE_CHARS} characters of code "
            "inside {{ }} and {% %}",
            syntax=True,
        )
    plain = references.parse(text)
    if plain is not None:
        return _plain_info(plain)
    from jinja2 import TemplateSyntaxError, nodes

    env = environment()
    try:
        tree = env.parse(text)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax: {exc.message}", syntax=True) from None
    except RecursionError:
        raise TemplateProblem("template syntax: nested too deeply", syntax=True) from None
    # Jinja's compiler and Python's walk the tree recursively: a chain of ten thousand
    # ``.a`` or ``+ 1`` is one level each, so the depth is checked here, iteratively.
    pending = [(tree, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_TEMPLATE_DEPTH:
            raise TemplateProblem(
                f"template syntax: nested more than {MAX_TEMPLATE_DEPTH} levels deep "
                "(a long chain of attributes, filters or operators)",
                syntax=True,
            )
        pending.extend((child, depth + 1) for child in node.iter_child_nodes())
    if any(True for _ in tree.find_all((nodes.For, nodes.Macro, nodes.CallBlock))):
        # A runbook fans out with for_each; a loop in a template could spin for hours.
        raise TemplateProblem(
            "template syntax: loops and macros are not allowed in runbook templates "
            "(use for_each, or filters such as join and map)",
            syntax=True,
        )

    stored: set[str] = set()
    for node in tree.find_all(nodes.Name):
        if node.ctx in ("store", "param"):
            stored.add(node.name)
    refs: list[Reference] = []
    free: set[str] = set()
    step_refs: set[str] = set()
    chain_tops: set[int] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        chain_tops.add(id(node.node))
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        if id(node) in chain_tops:
            continue  # not the outermost node of a chain
        parts = _chain(node, nodes)
        if not parts or parts[0] in stored:
            continue
        if isinstance(node, nodes.Name) and node.ctx != "load":
            continue
        free.add(parts[0])
        refs.append(Reference(parts))
        if parts[0] == "steps" and len(parts) > 1:
            step_refs.add(parts[1])
    return TemplateInfo(tuple(refs), frozenset(free), frozenset(step_refs))


def _plain_info(parsed: references.Parsed) -> TemplateInfo:
    """What a template of plain references reads, as the syntax tree would say."""
    refs = [
        Reference(ref.parts()) for part in parsed if isinstance(part, Ref) for ref in part.nested()
    ]
    steps = {r.parts[1] for r in refs if r.parts[0] == "steps" and len(r.parts) > 1}
    return TemplateInfo(tuple(refs), frozenset(r.parts[0] for r in refs), frozenset(steps))


def _code_chars(text: str) -> int:
    """Characters from each ``{{``/``{%`` to its closing mark (or the end of the text)."""
    total = 0
    at = 0
    while True:
        starts = [i for i in (text.find("{{", at), text.find("{%", at)) if i >= 0]
        if not starts:
            return total
        start = min(starts)
        close = "}}" if text.startswith("{{", start) else "%}"
        end = text.find(close, start + 2)
        end = len(text) if end < 0 else end + 2
        total += end - start
        at = end


def _chain(node: Any, nodes: Any) -> tuple[str, ...]:
    """``a.b['c'].d`` as ``("a", "b", "c", "d")``; stops at a non-constant subscript."""
    parts: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem):
            if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str | int):
                parts.append(str(node.arg.value))
            else:
                parts.clear()
            node = node.node
        elif isinstance(node, nodes.Name):
            parts.append(node.name)
            return tuple(reversed(parts))
        else:
            return ()


def _single_expression(text: str) -> str | None:
    """The expression of a template that is one ``{{ expression }}``, else None."""
    match = _SINGLE_EXPR.match(text)
    if match and "{{" not in match.group(1) and "}}" not in match.group(1):
        return match.group(1)
    return None


@lru_cache(maxsize=4096)
def _compiled(text: str) -> tuple[bool, Any]:
    env = environment()
    expression = _single_expression(text)
    if expression is not None:
        return True, env.compile_expression(expression, undefined_to_none=False)
    return False, env.from_string(text)


def render(text: str, context: dict[str, Any]) -> Any:
    """Render ``text``; a template that is one ``{{ expression }}`` keeps the value's type.

    Raises TemplateProblem on any rendering error (undefined name, sandbox refusal,
    a template going over its budget).
    """
    token = _BUDGET.set(_Budget())
    try:
        plain = references.parse(text)
        if plain is not None:
            try:
                return _render_plain(text, plain, context)
            except NotPlain:
                _BUDGET.set(_Budget())  # Jinja renders it, counting from nothing
        return _render_jinja(text, context)
    except BudgetExceeded as exc:
        raise TemplateProblem(f"template: over its budget: {exc}") from None
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError) as exc:
        raise TemplateProblem(f"template: {exc}") from None
    except (RecursionError, MemoryError):
        raise TemplateProblem("template: nested too deeply") from None
    except Exception as exc:
        # Imported here: a template of plain references renders without Jinja.
        from jinja2 import TemplateError

        if isinstance(exc, TemplateError):
            raise TemplateProblem(f"template: {exc.message or exc}") from None
        raise
    finally:
        _BUDGET.reset(token)


def _render_jinja(text: str, context: dict[str, Any]) -> Any:
    native, compiled = _compiled(text)
    if native:
        return _plain(_check(compiled(**context), "the template's value"))
    return compiled.render(**context)


def _render_plain(text: str, parsed: references.Parsed, context: dict[str, Any]) -> Any:
    """What Jinja would give for a template of plain references (see ``render``).

    Raises NotPlain where Jinja's own rules are needed (a name or key that is not there).
    """
    budget = _budget()
    if _single_expression(text) is not None:
        # Jinja's path reads this as one expression (a final newline dropped, as there).
        if not (isinstance(parsed[0], Ref) and parsed[1:] in ((), ("\n",))):
            raise NotPlain(text)  # ``{{ a }}}``: the expression would be ``a }``
        return _plain(_check(parsed[0].read(context, budget.step), "the template's value"))
    out: list[str] = []
    for part in parsed:
        if isinstance(part, str):
            out.append(part)
        else:
            value = part.read(context, budget.step)
            budget.emit(value)  # as _finalize does for each of Jinja's outputs
            out.append(str(value))
    return "".join(out)


def _plain(value: Any) -> Any:
    """Native results as plain data (tuples to lists, undefined-safe)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)

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
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

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


#: The largest string or list a template may build with ``*`` (and the largest exponent).
MAX_PRODUCT = 100_000
MAX_EXPONENT = 64
#: Filters and globals that can allocate without bound from a small input.
_UNBOUNDED = ("center", "indent", "wordwrap", "format", "lipsum")


@lru_cache(maxsize=1)
def environment() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        """The sandbox, plus bounds on what one expression may allocate.

        Loops are refused before rendering (see ``analyze``); ``range`` is capped by
        the sandbox; ``*`` and ``**`` are checked here, so no template can hang the
        compiler or exhaust memory.
        """

        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**":
                if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                    raise ValueError(f"exponent {right} is larger than {MAX_EXPONENT}")
                return left**right
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(count, int)
                    and len(seq) * count > MAX_PRODUCT
                ):
                    raise ValueError(f"the result would be longer than {MAX_PRODUCT}")
            return left * right

    env = BoundedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    for name in _UNBOUNDED:
        env.filters.pop(name, None)
        env.globals.pop(name, None)
    return env


@lru_cache(maxsize=4096)
def analyze(text: str) -> TemplateInfo:
    """Parse ``text`` and list the names it reads; raises TemplateProblem on bad syntax."""
    from jinja2 import TemplateSyntaxError, nodes

    env = environment()
    try:
        tree = env.parse(text)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax: {exc.message}", syntax=True) from None
    except RecursionError:
        raise TemplateProblem("template syntax: nested too deeply", syntax=True) from None
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


@lru_cache(maxsize=4096)
def _compiled(text: str) -> tuple[bool, Any]:
    env = environment()
    match = _SINGLE_EXPR.match(text)
    if match and "{{" not in match.group(1) and "}}" not in match.group(1):
        return True, env.compile_expression(match.group(1), undefined_to_none=False)
    return False, env.from_string(text)


def render(text: str, context: dict[str, Any]) -> Any:
    """Render ``text``; a template that is one ``{{ expression }}`` keeps the value's type.

    Raises TemplateProblem on any rendering error (undefined name, sandbox refusal).
    """
    from jinja2 import TemplateError

    try:
        native, compiled = _compiled(text)
        if native:
            value = compiled(**context)
            return _plain(value)
        return compiled.render(**context)
    except TemplateError as exc:
        raise TemplateProblem(f"template: {exc.message or exc}") from None
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError) as exc:
        raise TemplateProblem(f"template: {exc}") from None
    except RecursionError:
        raise TemplateProblem("template: nested too deeply") from None


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

"""Every output a step type publishes is declared in its ``outputs`` (and so in the step catalogue)."""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap

import pytest

from drctl.render.catalog import listing
from drctl.steps.registry import get_step_type, step_type_names

#: Helper modules whose ``ctx.output`` calls publish for the step types that use them.
HELPERS = {"drctl.steps.command": ("shell", "ssh.run")}


def _published(node: ast.AST) -> set[str]:
    """The literal keys of every ``X.output("key", …)`` call under ``node``."""
    keys = set()
    for call in ast.walk(node):
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "output"
            and call.args
            and isinstance(call.args[0], ast.Constant)
            and isinstance(call.args[0].value, str)
        ):
            keys.add(call.args[0].value)
    return keys


def _keys_in_source(name: str) -> set[str]:
    """Keys the type's class (and its bases in the same module) and its module's functions publish."""
    cls = type(get_step_type(name))
    tree = ast.parse(inspect.getsource(sys.modules[cls.__module__]))
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    keys: set[str] = set()
    for base in cls.__mro__:
        if base.__module__ == cls.__module__ and base.__name__ in classes:
            keys |= _published(classes[base.__name__])
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            keys |= _published(node)
    for module, users in HELPERS.items():
        if name in users:
            __import__(module)
            keys |= _published(ast.parse(inspect.getsource(sys.modules[module])))
    return keys


@pytest.mark.parametrize("name", step_type_names())
def test_each_published_output_is_declared(name: str) -> None:
    """The keys a step type's code passes to ctx.output are all in its declared outputs."""
    declared = set(get_step_type(name).outputs)
    assert _keys_in_source(name) <= declared, sorted(_keys_in_source(name) - declared)


def test_outputs_built_from_dicts_are_declared() -> None:
    """Outputs published from a dict or an f-string (lag, rs_status, route53) are declared too."""
    from drctl.providers.mongo.status import SetStatus
    from drctl.providers.postgres.lag import Lag, PrimaryPosition

    lag = Lag(0, 0.0, "0/1", "0/1", None, PrimaryPosition.NOT_ASKED)
    assert set(lag.as_outputs()) <= set(get_step_type("postgres.replication_lag").outputs)
    tree = ast.parse(textwrap.dedent(inspect.getsource(SetStatus.as_outputs)))
    (returned,) = [n.value for n in ast.walk(tree) if isinstance(n, ast.Return)]
    assert isinstance(returned, ast.Dict)
    keys = {k.value for k in returned.keys if isinstance(k, ast.Constant)}
    assert keys and keys <= set(get_step_type("mongo.rs_status").outputs), keys
    for key in ("values", "ttl", "previous_values", "previous_ttl"):
        assert key in get_step_type("route53.upsert").outputs


def test_the_catalogue_lists_outputs_named_in_the_issue() -> None:
    """promote's timeline and lag's receive_lsn are in the generated catalogue."""
    text = listing("markdown")
    assert "| `timeline` |" in text and "| `receive_lsn` |" in text

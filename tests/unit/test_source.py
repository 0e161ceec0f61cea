"""YAML loading with positions and limits (drctl.runbook.source)."""

from __future__ import annotations

import pytest

from drctl.diagnostics import Position
from drctl.errors import RunbookInvalid
from drctl.runbook.source import MAX_DEPTH, load_yaml


def test_positions_of_values_and_keys_are_recorded() -> None:
    """Every value and key gets its 1-based line and column."""
    doc = load_yaml("a: 1\nb:\n  - x\n  - {c: true}\n", "f.yaml")
    assert doc.data == {"a": 1, "b": ["x", {"c": True}]}
    assert doc.map.position(("a",)) == Position(1, 4)
    assert doc.map.position(("b", 1, "c")) == Position(4, 9)
    assert doc.map.position(("b",), key=True) == Position(2, 1)


def test_position_falls_back_to_the_nearest_enclosing_value() -> None:
    """A loc deeper than the document (an error on a missing key) maps to its parent."""
    doc = load_yaml("a:\n  b: 1\n", "f.yaml")
    assert doc.map.position(("a", "missing", 0)) == Position(2, 3)


def test_duplicate_keys_are_reported_not_silently_replaced() -> None:
    """PyYAML keeps the last duplicate; we report it with its position."""
    doc = load_yaml("a: 1\nb: 2\na: 3\n", "f.yaml")
    assert [(d.code, d.position) for d in doc.problems] == [("E103", Position(3, 1))]


def test_yaml_scalars_resolve_to_their_types() -> None:
    """Plain scalars keep YAML's types; quoted ones stay strings."""
    doc = load_yaml("i: 3\nf: 1.5\nb: yes\nn: null\ns: '3'\nd: 2024-01-01\n", "f.yaml")
    assert doc.data == {"i": 3, "f": 1.5, "b": True, "n": None, "s": "3", "d": "2024-01-01"}


def test_anchors_aliases_and_merge_keys_work() -> None:
    """Ordinary anchors, aliases and ``<<`` merges are supported."""
    doc = load_yaml("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\nlist: [*b]\n", "f.yaml")
    assert doc.data["use"] == {"x": 1, "y": 3}
    assert doc.data["list"] == [{"x": 1, "y": 2}]


@pytest.mark.parametrize(
    ("text", "code", "fragment"),
    [
        ("a: [1, 2\n", "E101", "YAML syntax"),
        ("a: !!python/object:os.system x\n", "E102", "unsupported YAML tag"),
        ("---\na: 1\n---\nb: 2\n", "E102", "more than one YAML document"),
        ("{[1]: 2}\n", "E102", "mapping key must be a plain value"),
        ("a: *nope\n", "E101", "YAML syntax"),
    ],
)
def test_bad_yaml_is_one_positioned_diagnostic(text: str, code: str, fragment: str) -> None:
    """Syntax errors, unsafe tags, several documents and complex keys are refused."""
    with pytest.raises(RunbookInvalid) as info:
        load_yaml(text, "bad.yaml")
    (diag,) = info.value.diagnostics
    assert diag.code == code
    assert fragment in diag.message
    assert diag.source == "bad.yaml"
    assert diag.position is not None


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    """Block nesting past MAX_DEPTH is an error, not a stack overflow."""
    text = (
        "".join(f"{'  ' * i}k{i}:\n" for i in range(MAX_DEPTH + 5)) + "  " * (MAX_DEPTH + 5) + "v\n"
    )
    with pytest.raises(RunbookInvalid) as info:
        load_yaml(text, "deep.yaml")
    assert "nesting deeper" in info.value.diagnostics[0].message


def test_alias_bomb_is_refused_quickly() -> None:
    """Billion laughs is cut off by the expanded-value budget."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    with pytest.raises(RunbookInvalid) as info:
        load_yaml("\n".join(lines) + "\n", "bomb.yaml")
    assert "alias expansion" in info.value.diagnostics[0].message

"""Templates of plain references are read without Jinja, with Jinja's own results.

Every template here is rendered and analysed twice, once as drctl does (plain
references read directly) and once with Jinja alone; values, error messages and the
names each reads must be the same.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drctl.compiler import references, templating
from drctl.compiler.templating import MAX_SIZE, TemplateProblem, analyze, render

CONTEXT: dict[str, Any] = {
    "params": {
        "nodes": [
            {"name": "node1", "dsn": "host=127.0.0.2 port=5432", "port": 5432},
            {"name": "node2", "dsn": "host=127.0.0.3 port=5432", "tags": ["a", "b"]},
        ],
        "zone": "sandbox.drctl.test.",
        "port": 55432,
        "flag": True,
        "ratio": 0.25,
        "nothing": None,
        "empty": "",
        "items": "a key named like a dict method",
        "_private": "underscore key",
        "0": "a key that is a digit",
        "with space": "spaced key",
        "nested": {"deep": {"er": {"est": [[1, 2], [3, {"x": "y"}]]}}},
        "mixed": {1: "int key", "1": "str key"},
        "big": "x" * (MAX_SIZE + 1),
    },
    "targets": {"node1": {"host": "127.0.0.2"}, "node2": {"host": "127.0.0.3"}},
    "steps": {"choose": {"outputs": {"target": "node2", "others": ["node1"], "index": 1}}},
    "item": "node1",
    "index_name": "zone",
}

PLAIN = [
    "{{ params.zone }}",
    "{{params.zone}}",
    "{{\n  params.zone\n}}",
    "{{\tparams.port }}",
    "{{ params.nodes[0].dsn }}",
    "{{ params.nodes[1]['tags'][1] }}",
    '{{ params["zone"] }}',
    "{{ params['with space'] }}",
    "{{ params['0'] }}",
    "{{ params['items'] }}",
    "{{ params._private }}",
    "{{ params.flag }}",
    "{{ params.ratio }}",
    "{{ params.nothing }}",
    "{{ params.empty }}",
    "{{ params.nodes }}",
    "{{ params.nested.deep.er.est[1][1].x }}",
    "{{ params.mixed[1] }}",
    "{{ params.mixed['1'] }}",
    "{{ targets[steps.choose.outputs.target].host }}",
    "{{ targets[item].host }}",
    "{{ params[index_name] }}",
    "{{ params.nodes[steps.choose.outputs.index].name }}",
    "{{ params.nodes[steps.choose.outputs.index]['name'] }}",
    "{{ steps.choose.outputs.others }}",
    "{{ item }}",
    "host=db.{{ params.zone }} port={{ params.port }} dbname=postgres",
    "{{ params.zone }}\n",
    "\n{{ params.zone }}",
    "{{ params.zone }}{{ params.port }}",
    "{{ params.flag }} {{ params.nothing }} {{ params.ratio }} {{ params.nodes[1].tags }}",
    "Promote {{ steps.choose.outputs.target }}? The old primary is fenced (hard).",
    "a } b }} c {{ params.zone }} d { e",
    "no holes at all",
    "",
]

#: Jinja's business: filters, tests, operators, calls, literals, whitespace control,
#: statements, comments, unknown names and keys, other objects' attributes.
JINJA = [
    "{{ params.nodes | map(attribute='name') | list }}",
    "{{ params.zone | upper }}",
    "{{ params.zone|upper }}",
    "{{ params.port + 1 }}",
    "{{ params.zone ~ '!' }}",
    "{{ params.zone.upper() }}",
    "{{ params.items }}",
    "{{ params.keys }}",
    "{{ params.nodes.0.name }}",
    "{{ params.nodes[-1].name }}",
    "{{ params.nodes[5] }}",
    "{{ params.nodes[true] }}",
    "{{ params.missing }}",
    "{{ params.missing.deeper }}",
    "{{ params['missing'] }}",
    "{{ missing }}",
    "{{ missing.attr }}",
    "{{ targets[params.missing].host }}",
    "{{ targets[params.nodes].host }}",
    "{{ params.zone.missing }}",
    "{{ params.zone[0] }}",
    "{{ params.nodes[0].dsn.split }}",
    "{{ params.nested.__class__ }}",
    "{{ params.mixed[params.flag] }}",
    "{{ range }}",
    "{{ true }}",
    "{{ none }}",
    "{{ params.true }}",
    "{{ self }}",
    "{{ loop }}",
    "{{- params.zone }}",
    "{{ params.zone -}}",
    "{{- params.zone -}}",
    "{{+ params.zone }}",
    "{{ params .zone }}",
    "{{ params. zone }}",
    "{{ params[ 'zone' ] }}",
    "{{ params['zo\\'ne'] }}",
    "{{ params['zo}}ne'] }}",
    "{{ params.zone if params.flag else 'x' }}",
    "{{ params.zone is defined }}",
    "{{ 'literal' }}",
    "{{ 1 }}",
    "{{ [params.zone] }}",
    "{{ params.zone }} {% if params.flag %}yes{% endif %}",
    "{{ params.zone }} {# comment #}",
    "{% raw %}{{ params.zone }}{% endraw %}",
    "{{ params.zone }}\r\nnext",
    "{{ params.zone",
    "{{ params.zone }}}",
    "{{ }}",
    "{{ params.zone }} {{ params.missing }}",
    "{{ " + ".".join(["params", *["nested"] * 30]) + " }}",
    "{{ " + "params" + "['x']" * 60 + " }}",
]

#: Plain references whose value is over the budget: the same refusal either way.
OVER_BUDGET = ["{{ params.big }}", "text {{ params.big }}", "{{ params.big }}\n"]


def _jinja_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(references, "parse", lambda text: None)


def _outcome(text: str) -> tuple[str, Any]:
    try:
        return "value", render(text, CONTEXT)
    except TemplateProblem as exc:
        return "error", exc.message


def _info(text: str) -> tuple[str, Any]:
    try:
        return "info", analyze.__wrapped__(text)  # type: ignore[attr-defined]
    except TemplateProblem as exc:
        return "error", (exc.message, exc.syntax)


@pytest.mark.parametrize("text", PLAIN + JINJA + OVER_BUDGET)
def test_plain_reading_matches_jinja(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering and analysing give what Jinja alone gives, value or error, name for name."""
    ours = _outcome(text), _info(text)
    _jinja_only(monkeypatch)
    assert ours == (_outcome(text), _info(text))
    if ours[0][0] == "value":
        assert type(ours[0][1]) is type(_outcome(text)[1])


@pytest.mark.parametrize("text", PLAIN)
def test_plain_references_need_no_jinja(text: str) -> None:
    """A template of plain references is parsed, checked and rendered without Jinja's environment."""
    assert references.parse(text) is not None
    templating.environment.cache_clear()
    analyze.__wrapped__(text)  # type: ignore[attr-defined]
    render(text, CONTEXT)
    assert templating.environment.cache_info().currsize == 0


@pytest.mark.parametrize("text", JINJA)
def test_everything_else_is_left_to_jinja(text: str) -> None:
    """Filters, operators, statements and the rest are not read as plain references,
    or, if they parse as such, need Jinja's rules at render time (a missing key)."""
    parsed = references.parse(text)
    if parsed is None:
        return
    with pytest.raises(references.NotPlain):
        templating._render_plain(text, parsed, CONTEXT)


def test_combinations_match_jinja(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces of text and holes, plain or not, joined in every order of three, read as Jinja does."""
    pieces = ["x ", "{{ params.zone }}", "{{ params.missing }}", "{{ item }}", "\n", "{{ params.port|string }}",
              "{{ targets[item].host }}", "}", "{"]  # fmt: skip
    texts = ["".join(p) for p in itertools.permutations(pieces, 3)]
    ours = [(_outcome(t), _info(t)) for t in texts]
    _jinja_only(monkeypatch)
    assert ours == [(_outcome(t), _info(t)) for t in texts]


def test_budget_counts_each_access_as_jinja_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """The work budget sees the same attribute and item reads on either path."""
    counted: list[int] = []
    real = templating._Budget.step

    def step(self: templating._Budget) -> None:
        counted.append(1)
        real(self)

    monkeypatch.setattr(templating._Budget, "step", step)
    text = "{{ targets[steps.choose.outputs.target].host }} {{ params.nodes[1]['tags'][0] }}"
    render(text, CONTEXT)
    ours = len(counted)
    counted.clear()
    _jinja_only(monkeypatch)
    render(text, CONTEXT)
    assert ours == len(counted) == 9


#: Pieces templates are made of: names (known, unknown, reserved), accessors, keys,
#: spaces, braces, operators and plain text.
TOKENS = ["params", "targets", "steps", "item", "missing", "none", "self", ".", "zone", "nodes",
          "choose", "outputs", "target", "host", "items", "[", "]", "0", "1", "5", "'zone'",
          '"name"', "'with space'", " ", "\n", "{{", "}}", "{{ ", " }}", "{", "}", "|", "upper",
          "-", "+", "(", ")", "~", "x", "text ", "{%", "%}", "{#", "#}"]  # fmt: skip


#: A hole: ``{{``, spaces, a name and its accessors, spaces, ``}}``.
HOLES = st.builds(
    lambda head, path, before, after: "{{" + before + head + "".join(path) + after + "}}",
    st.sampled_from(["params", "targets", "steps", "item", "index_name", "missing", "true"]),
    st.lists(
        st.sampled_from([".zone", ".nodes", ".port", ".name", ".host", ".items", ".missing",
                         ".choose", ".outputs", ".target", ".others", ".index", ".tags", "[0]",
                         "[1]", "[2]", "['zone']", '["nodes"]', "['0']", "[item]", "[index_name]",
                         "[steps.choose.outputs.target]", "[steps.choose.outputs.index]",
                         "[params.missing]", "|upper", " ~ 'x'", "()"]),
        max_size=6,
    ),
    st.sampled_from(["", " ", "\n ", "- ", "\t"]),
    st.sampled_from(["", " ", " \n", " -", "  "]),
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(TOKENS), HOLES), max_size=10))
def test_generated_templates_match_jinja(tokens: list[str]) -> None:
    """Any text built of these pieces renders and analyses as Jinja alone would have it."""
    text = "".join(tokens)
    ours = _outcome(text), _info(text)
    real = references.parse
    references.parse = lambda text: None  # type: ignore[assignment]
    try:
        assert ours == (_outcome(text), _info(text))
    finally:
        references.parse = real

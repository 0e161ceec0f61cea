"""The generated parts of ``docs/``: runbook reference, step catalogue, exit and error codes.

Each page is rendered from the code it documents (the runbook JSON Schema, the
registered step types, the exception tree, the diagnostic and lint codes), so the
docs cannot drift: ``drctl docs`` rewrites them and ``drctl docs --check`` (run by
the tests) fails when a committed page differs from what the code says now.

Output is byte-stable: every listing is sorted or follows declaration order, and
nothing depends on hash order, the clock or the machine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMMAND = "drctl docs"


def header(source: str) -> str:
    """The first line of every generated page: generated, from what, by which command."""
    return (
        f"<!-- Generated from {source} by `{COMMAND}`; do not edit. "
        f"Regenerate with `{COMMAND}`; `{COMMAND} --check` fails when it is stale. -->\n"
    )


# --------------------------------------------------------------------------- schema helpers


_SLUG = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


def _type_name(schema: Any) -> str:
    """A short, stable type name for a JSON Schema fragment."""
    if not isinstance(schema, dict) or not schema:
        return "any"
    if "$ref" in schema:
        ref = str(schema["$ref"]).rsplit("/", 1)[-1]
        return ref.split(":", 1)[-1]
    if "const" in schema:
        return json.dumps(schema["const"])
    if "anyOf" in schema:
        names = [_type_name(s) for s in schema["anyOf"]]
        plain = [n for n in names if n != "null"]
        if plain == ["string", "number"]:
            plain = ["duration"]
        out = " | ".join(dict.fromkeys(plain))
        return out + (" | null" if "null" in names else "")
    if "enum" in schema:
        if len(schema["enum"]) > 8:
            return "string (one of the step types)"
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if schema.get("pattern") == _SLUG:
        return "slug"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list[{_type_name(schema.get('items', {}))}]"
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and "oneOf" in extra:
            return "map[name, target]"
        if "patternProperties" in schema:
            (value,) = schema["patternProperties"].values()
            return f"map[name, {_type_name(value)}]"
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return f"map[string, {_type_name(extra)}]"
        return "map"
    return str(kind)


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell (one line, pipes escaped)."""
    return " ".join(text.split()).replace("|", "\\|")


def _default(spec: dict[str, Any], required: bool) -> str:
    if required:
        return ""
    if "default" not in spec:
        return ""
    return f"`{json.dumps(spec['default'], sort_keys=True)}`"


#: Descriptions for runbook fields whose models carry none, keyed ``Model.field``.
#: The tests check that every key names a field that exists in the schema.
FIELD_DOCS: dict[str, str] = {
    "Runbook.apiVersion": "Format version; always `drctl/v1`.",
    "Runbook.kind": "Always `Runbook`.",
    "Runbook.metadata": "Name, description, owner and labels (see [metadata](#metadata)).",
    "Runbook.objectives": "Recovery objectives that drills measure against (see [objectives](#objectives)).",
    "Runbook.params": "Typed parameters, bound with `-p key=value` or `--params-file` (see [params](#params)).",
    "Runbook.targets": "The systems steps act on, by name (see [targets](#targets)).",
    "Runbook.settings": "Execution settings; command-line flags override them (see [settings](#settings)).",
    "Runbook.acknowledge": "Safety lints (DR001–DR006) acknowledged for the whole runbook.",
    "Runbook.steps": "The steps, in reading order (see [steps](#steps)); at least one.",
    "Metadata.name": "The runbook's name: a slug; the lock key of a runbook that changes no named system.",
    "Metadata.description": "One line on what the runbook does; shown in plans and reports.",
    "Metadata.owner": "Who to ask about it.",
    "Metadata.labels": "Free-form labels.",
    "Objectives.rto": "Recovery time objective: the longest acceptable window with no successful write.",
    "Objectives.rpo": "Recovery point objective: `0` means no acknowledged write may be lost.",
    "ParamSpec.type": "How `-p key=value` text is parsed and checked.",
    "ParamSpec.default": "Value when the parameter is not given.",
    "ParamSpec.required": "Compilation fails when the parameter is not given.",
    "ParamSpec.choices": "The only values allowed.",
    "ParamSpec.description": "Shown in plans and in error messages.",
    "Settings.state": "State store: a SQLite path, a `postgresql://` URL or an `etcd://HOST:PORT[,HOST:PORT…]/PREFIX` URL; `--state` and `DRCTL_STATE` override it.",
    "Settings.lock": "Lock key: one active run per key per state store; may be a template over params and targets (default: one lock per system the runbook changes, see docs/state-and-locking.md).",
    "Settings.step_timeout": "Timeout of every step that sets none. Unwritten, each step gets 300 s, or its own waits (`with.wait`, `with.deadline`, `wait_seconds`…, defaults included) plus 60 s when longer; a step whose written waits are longer than a written timeout is error E213.",
    "Settings.concurrency": "How many independent steps may run at once (`--concurrency` overrides it).",
    "Settings.max_steps": "The most steps the plan may have, `for_each` instances included (at most 50,000; see [limits](limits.md)).",
    "StepSpec.id": "Unique slug; fan-out instances are named `id[item]`.",
    "StepSpec.type": "The step type (see the [step catalogue](step-catalogue.md)).",
    "StepSpec.target": "Name of the target the step acts on; its type must be one the step type accepts. May be a template: over params or the `for_each` item it is rendered at compile time; over steps' outputs (`{{ steps.choose.outputs.target }}`) it is decided at run time among `target_one_of` (see [targets decided at run time](#targets-decided-at-run-time)).",
    "StepSpec.with": "The step type's inputs, validated against its model at compile time; values may be templates.",
    "StepSpec.requires": "Step ids this step runs after (default: the previous step); a string or a list.",
    "StepSpec.when": "A condition (template or boolean); when false the step is skipped.",
    "StepSpec.for_each": "Fan out: one instance per item of a list (or a template rendering to one).",
    "StepSpec.as": "Name of the current `for_each` item in templates.",
    "StepSpec.timeout": "Overrides `settings.step_timeout` for this step.",
    "StepSpec.retries": "Try a failed step again (see [retries](#retries)).",
    "StepSpec.on_failure": "`abort` (default), `continue`, `rollback`, or `{run: ID}` to run a step from `fallbacks`.",
    "StepSpec.rollback": "A custom undo step, run when the run rolls back (see [rollback](#rollback)).",
    "StepSpec.approve": "A gate: ask before the step runs (`--yes`, `--approve ID`, or a prompt on a TTY); or a mapping for a gate other people open with `drctl approve` (see [approve](#approve)).",
    "StepSpec.description": "One line for the plan; may be a template.",
    "StepSpec.acknowledge": "Safety lints (DR001–DR007) acknowledged for this step.",
    "StepSpec.target_one_of": "The targets a `target` or `for_each` decided at run time may name; each must be declared and of a type the step type accepts. Optional when the template reads an output whose step type declares its targets (`postgres.choose_primary`'s `target` and `others`: its candidates).",
    "StepSpec.verifies": "Step ids (a string or a list) this verification step verifies, for DR004, when it checks them through another target (a write through the DNS name verifies the promote). Each must run before it.",
    "StepSpec.guards": "Stop conditions of this step only: read once just before it starts, then while it runs (see [guards](#guards)).",
    "Retries.attempts": "Total attempts, the first included.",
    "Retries.delay": "Wait before the second attempt.",
    "Retries.backoff": "Multiplier applied to the delay after each attempt.",
    "Retries.max_delay": "Upper bound on the delay.",
    "Fallback.run": "Id of a step in `fallbacks` to run instead of failing; it is journaled like any step.",
    "RollbackSpec.type": "Step type of the undo step.",
    "RollbackSpec.target": "Its target.",
    "RollbackSpec.with": "Its inputs.",
    "RollbackSpec.timeout": "Its timeout.",
    "RollbackSpec.description": "One line for the plan.",
    "ApproveSpec.count": "Approvals from distinct people needed.",
    "ApproveSpec.not_by_starter": "The person who started the run cannot approve (nor can `--yes` or `--approve`, which are theirs).",
    "ApproveSpec.expires": "How long an approval stays good (default: until the run ends).",
    "Settings.identity_env": "Environment variable naming the person approving or starting a run (a CI actor, e.g. `GITHUB_ACTOR`); default `user@host`.",
    "GuardSpec.id": "Unique slug, not shared with any step.",
    "GuardSpec.type": "A read-only step type (`postgres.sql`, `http`, `dns.resolve`, `shell` with `mutates: false`, …); one that changes something is error E295.",
    "GuardSpec.target": "Its target, as for a step.",
    "GuardSpec.with": "Its inputs; templates may read params and targets, not steps' outputs (a guard reads before any step ran).",
    "GuardSpec.every": "How often it is read (after a first reading before the first step).",
    "GuardSpec.trip_after": "Failed readings in a row that trip it.",
    "GuardSpec.on_trip": "`halt`: launch nothing more, let in-flight steps finish, exit 1, resumable; `rollback`: halt, then undo completed mutating steps in reverse.",
    "GuardSpec.on_error": "A reading that cannot be taken (the system does not answer, or times out): `trip` counts it as failed, `ignore` leaves it out.",
    "GuardSpec.timeout": "Bound on one reading (default: `settings.step_timeout`).",
    "GuardSpec.description": "One line for the plan.",
    "AwsTarget.region": "AWS region of the resources.",
    "AwsTarget.profile": "Named AWS profile (default: the standard credential chain).",
    "AwsTarget.endpoint_url": "Alternative API endpoint (a test server, a VPC endpoint).",
    "HttpTarget.base_url": "Base URL that steps' paths are joined to.",
    "HttpTarget.headers": "Headers sent with every request; values may be secret references.",
    "HttpTarget.verify_tls": "Verify the server's TLS certificate.",
    "MongoTarget.uri": "MongoDB connection URI (usually a secret reference).",
    "MongoTarget.host": "Host name, for templates and messages.",
    "PostgresTarget.dsn": "libpq connection string or URL (usually a secret reference).",
    "PostgresTarget.host": "Host name, for templates (`{{ targets.NAME.host }}`) and messages.",
    "PostgresTarget.data_dir": "Data directory, for steps that control the server itself (fence stop, rejoin).",
    "PostgresTarget.ssh": "Name of an `ssh` target to reach the server's host; local when absent.",
    "PostgresTarget.bin_dir": "Directory of `pg_ctl` and `pg_rewind`.",
    "PostgresTarget.os_user": "OS user that owns the data directory; server commands run as it.",
    "PostgresTarget.start_options": "Per-node server options (`pg_ctl start -o`), kept out of the data directory because `pg_rewind` copies the configuration.",
    "PostgresTarget.log_file": "Server log file for `pg_ctl start`.",
    "PostgresTarget.dns_server": "Resolve the DSN's host through this DNS server (`host:port`) instead of the system resolver, on every connection any postgres step makes (and in the conninfo a standby is pointed at).",
    "Rfc2136Target.server": "Address of the authoritative server.",
    "Rfc2136Target.port": "Its port.",
    "Rfc2136Target.zone": "The zone updated; record names are relative to it.",
    "Rfc2136Target.tsig_key_name": "Name of the TSIG key.",
    "Rfc2136Target.tsig_algorithm": "TSIG algorithm.",
    "Rfc2136Target.tsig_secret": "Base64 TSIG secret (a secret reference).",
    "Route53Target.hosted_zone_id": "Hosted zone id (`Z…`).",
    "Route53Target.region": "Region for the API client.",
    "Route53Target.endpoint_url": "Alternative API endpoint (a test server).",
    "Route53Target.profile": "Named AWS profile.",
    "SshTarget.host": "Host name or address.",
    "SshTarget.port": "SSH port.",
    "SshTarget.user": "Login user.",
    "SshTarget.key_file": "Private key file.",
    "SshTarget.key_passphrase": "Passphrase of the key file.",
    "SshTarget.password": "Password (prefer keys).",
    "SshTarget.known_hosts": "known_hosts file; unknown or changed host keys are refused.",
    "SshTarget.agent": "Use the SSH agent's keys.",
    "SshTarget.connect_timeout": "Seconds to wait for the connection.",
}

_RUN_TIME_TARGETS = [
    "## Targets decided at run time",
    "",
    "A step's `target` may be a template. Over params or the `for_each` item it is rendered "
    "at compile time and checked like a written name. Over an earlier step's outputs "
    '(`target: "{{ steps.choose.outputs.target }}"`) it is decided at run time, and the '
    "compiler must know every target it may name: `target_one_of: [node2, node3]` on the "
    "step, or, with none, the targets the output's step type declares (`postgres.choose_primary`'s "
    "`target` and `others` may name any of its `candidates`). Nothing else is guessed: a "
    "template the compiler cannot trace to a list is an error (E211) asking for "
    "`target_one_of`. Each of those targets must be declared and of a type the step type "
    "acts on. At run time the rendered name must be one of them and of that type, or the "
    "step fails saying which name it got and what it may take; the `step_started` event "
    "journals the target used. The plan shows such a target as *decided at run time from "
    "steps.choose.outputs.target: one of node2, node3*.",
    "",
    "`for_each` may fan out over targets the same way: a template over steps' outputs that "
    'gives a list of target names (`for_each: "{{ steps.choose.outputs.others }}"`, '
    '`target: "{{ item }}"`). The plan holds one instance per target the list may name '
    "(`follow[node2]`, `follow[node3]`); at run time an instance whose target is not in the "
    "list is skipped, saying so, and a list naming any other target fails the step. Safety "
    "lints reason over every target a step may take (see [safety lints](exit-codes.md#safety-lints)).",
    "",
]

#: Runbook sections documented field by field: (heading, anchor, schema $defs name).
_SECTIONS = (
    ("metadata", "Metadata"),
    ("objectives", "Objectives"),
    ("params", "ParamSpec"),
    ("settings", "Settings"),
    ("steps", "StepSpec"),
    ("retries", "Retries"),
    ("on_failure", "Fallback"),
    ("rollback", "RollbackSpec"),
    ("guards", "GuardSpec"),
    ("approve", "ApproveSpec"),
)

_SECTION_INTRO = {
    "metadata": "`metadata:`",
    "objectives": "`objectives:` — durations are `500ms`, `30s`, `5m`, `1h` or a number of seconds.",
    "params": "`params: {NAME: SPEC}` — templates read them as `{{ params.NAME }}`.",
    "settings": "`settings:`",
    "steps": "Each item of `steps:` and of `fallbacks:`.",
    "retries": "`retries:` on a step.",
    "on_failure": "`on_failure:` on a step, when it names a fallback.",
    "rollback": "`rollback:` on a step.",
    "guards": "Each item of `guards:`.",
    "approve": "`approve:` on a step, as a mapping (`approve: true` is a gate anyone at the terminal opens).",
}


def _field_rows(model: str, spec: dict[str, Any], extra: dict[str, str] | None = None) -> list[str]:
    rows = [
        "| field | type | required | default | description |",
        "|---|---|---|---|---|",
    ]
    required = set(spec.get("required", []))
    for name, prop in spec.get("properties", {}).items():
        desc = prop.get("description") or FIELD_DOCS.get(f"{model}.{name}", "")
        if extra and name in extra:
            desc = f"{extra[name]} {desc}".strip()
        rows.append(
            f"| `{name}` | `{_cell(_type_name(prop))}` | {'yes' if name in required else 'no'} "
            f"| {_default(prop, name in required)} | {_cell(desc)} |"
        )
    return rows


def _first_paragraph(text: str) -> str:
    return " ".join(text.strip().split("\n\n", 1)[0].split())


def _rst_to_md(text: str) -> str:
    return text.replace("``", "`")


def runbook_reference() -> str:
    """``docs/runbook-reference.md`` from ``runbook_schema()`` and the target types."""
    from drctl.compiler.schema import runbook_schema
    from drctl.runbook.targets import TARGET_TYPES
    from drctl.steps.registry import get_step_type, step_type_names

    schema = runbook_schema()
    defs = schema["$defs"]
    out = [
        header("the runbook JSON Schema (drctl/compiler/schema.py, `drctl schema`)"),
        "# Runbook reference (`apiVersion: drctl/v1`)",
        "",
        _rst_to_md(schema.get("description", "")),
        "",
        "A runbook is one YAML file. Every field below is checked at compile time "
        "(`drctl validate`), and every error names `file:line:col` with an error code "
        "(see [exit codes and error codes](exit-codes.md)). Any string value may be a "
        "Jinja template (`{{ params.x }}`, `{{ targets.name.field }}`, "
        "`{{ steps['id'].outputs.name }}`), rendered before the value is validated. "
        "Secrets are references — `${env:NAME}` or `${file:path}` — resolved only when "
        "a run starts and masked as `***` everywhere.",
        "",
        "For editors: `drctl schema > runbook.schema.json` and point your YAML language "
        "server at it.",
        "",
        "## Top-level fields",
        "",
        *_field_rows("Runbook", schema),
        "",
    ]
    for heading, model in _SECTIONS:
        spec = defs[model]
        intro = _SECTION_INTRO[heading]
        if spec.get("description"):
            intro += " " + _rst_to_md(_first_paragraph(spec["description"]))
        out += [f"## {heading}", "", intro, "", *_field_rows(model, spec), ""]
    out += _RUN_TIME_TARGETS
    # Targets, one table per target type, with their secret fields.
    out += [
        "## targets",
        "",
        "`targets: {NAME: {type: TYPE, ...}}` — the systems steps act on. Fields marked "
        "secret should be secret references (`${env:…}`, `${file:…}`); a literal value there "
        "is lint DR005. Templates see only the non-secret fields, as "
        "`{{ targets.NAME.FIELD }}`.",
        "",
        "| type | description | secret fields |",
        "|---|---|---|",
    ]
    for kind, model_cls in sorted(TARGET_TYPES.items()):
        spec = defs[f"target:{kind}"]
        secrets = ", ".join(f"`{s}`" for s in sorted(model_cls.secret_fields)) or "none"
        out.append(
            f"| [`{kind}`](#target-{kind}) | {_cell(_rst_to_md(spec.get('description', '')))} | {secrets} |"
        )
    out.append("")
    for kind, model_cls in sorted(TARGET_TYPES.items()):
        spec = defs[f"target:{kind}"]
        out += [
            f'<a id="target-{kind}"></a>',
            "",
            f"### target `{kind}`",
            "",
            _rst_to_md(spec.get("description", "")),
            "",
        ]
        marks = dict.fromkeys(model_cls.secret_fields, "**Secret.**")
        marks["type"] = "The target type."
        out += [*_field_rows(model_cls.__name__, spec, marks), ""]
    # Step types: the values of `type:` and the targets each accepts.
    out += [
        "## Step types",
        "",
        "The values `type:` accepts, with the target types each one acts on. Their `with` "
        "inputs are in the [step catalogue](step-catalogue.md).",
        "",
        "| type | targets | summary |",
        "|---|---|---|",
    ]
    for name in step_type_names():
        step_type = get_step_type(name)
        targets = ", ".join(f"`{t}`" for t in sorted(step_type.target_types)) or "none"
        anchor = re.sub(r"[^a-z0-9_-]", "", name.lower())
        out.append(
            f"| [`{name}`](step-catalogue.md#{anchor}) | {targets} | {_cell(_rst_to_md(step_type.summary()))} |"
        )
    # Models that step inputs use (a list of members, an alias target, …).
    documented = {model for _, model in _SECTIONS} | {"Runbook", "Role"}
    nested = sorted(
        name for name in defs if ":" not in name and name not in documented and name != "template"
    )
    if nested:
        out += [
            "",
            "## Input types",
            "",
            "Structured values that step types' `with` inputs take (named in the step "
            "catalogue's type column).",
        ]
    for name in nested:
        spec = defs[name]
        out += ["", f"### `{name}`", ""]
        if spec.get("description"):
            out += [_rst_to_md(_first_paragraph(spec["description"])), ""]
        out += _field_rows(name, spec)
    out += [
        "",
        "## Safety lints",
        "",
        "Lints are errors unless acknowledged by code, on the step (`acknowledge:` in the "
        "step) or for the whole runbook (top-level `acknowledge:`). See "
        "[exit codes and error codes](exit-codes.md#safety-lints).",
        "",
    ]
    return "\n".join(out)


def step_catalogue() -> str:
    """``docs/step-catalogue.md``: the markdown of ``drctl steps --format markdown``."""
    from drctl.render.catalog import listing

    body = listing("markdown").rstrip("\n") + "\n"
    return header("the registered step types (`drctl steps --format markdown`)") + "\n" + body


# --------------------------------------------------------------------------- exit codes

#: What each process exit code means (DESIGN.md, drctl/errors.py, the executor).
EXIT_CODES: tuple[tuple[int, str, str], ...] = (
    (0, "done", "The command succeeded; a run finished, or a dry run's checks all passed."),
    (
        1,
        "failed",
        "A step failed, a run rolled back, resume was refused, or the state store failed. "
        "Also: `drctl diff` when the runbooks differ, `drctl drill` when an objective is "
        "missed, `drctl docs --check` when a generated page is stale.",
    ),
    (2, "invalid", "Invalid runbook, parameters or usage; an unknown or broken step type."),
    (
        3,
        "lock held",
        "Another live run holds the lock key (the message names it), or an unfinished run "
        "of the same runbook exists.",
    ),
    (
        4,
        "approval",
        "A gate needs approval and there is no TTY (resume with `--approve STEP`), or "
        "approval was denied.",
    ),
    (70, "internal error", "A bug in drctl; rerun with `DRCTL_DEBUG=1` for the traceback."),
    (130, "interrupted (resumable)", "Ctrl-C; `drctl resume` continues the run."),
)

#: Descriptions of the diagnostic codes (drctl/diagnostics.py); a code without one
#: falls back to its constant's name.
ERROR_CODE_DOCS: dict[str, str] = {
    "E100": "File problem: missing, a directory, unreadable, too large, or not UTF-8.",
    "E101": "YAML syntax error.",
    "E102": "YAML nesting depth or alias expansion beyond drctl's limits.",
    "E103": "Duplicate key in a YAML mapping.",
    "E200": "Schema error: wrong type, missing field, or bad value.",
    "E201": "Unknown field (with a did-you-mean hint).",
    "E210": "Unknown step type.",
    "E211": "Unknown target, or a target of the wrong type for the step.",
    "E212": "Invalid step inputs (`with`) for the step type.",
    "E213": "A step's own waits (`with.deadline`, `with.wait`…) are longer than its timeout.",
    "E220": "Duplicate step id.",
    "E230": "Parameter error: missing, wrong type, not one of the choices, or unknown.",
    "W230": "Warning: a params file has keys the runbook does not declare (ignored, one warning listing them).",
    "E240": "Template syntax error.",
    "E241": "Template uses a name that does not exist (or is refused by the sandbox).",
    "E242": "Template refers to a step, or a step's output, that is not available there.",
    "E250": "`requires` names a step that does not exist.",
    "E251": "Dependency cycle between steps.",
    "E260": "Invalid secret reference.",
    "E270": "Invalid `for_each` (not a list, or duplicate instance ids).",
    "E280": "`acknowledge` names a lint that does not apply.",
    "W280": "Warning: `acknowledge` names a lint that does not fire there (stale; remove it).",
    "E290": "A registered step type failed to load.",
    "E295": "A guard whose step type changes something, or whose inputs read steps' outputs.",
}


@dataclass(frozen=True)
class ErrorClass:
    name: str
    depth: int
    exit_code: int
    doc: str


def error_classes() -> list[ErrorClass]:
    """The DrctlError tree, depth first in declaration order (as in drctl/errors.py)."""
    import inspect

    from drctl import errors

    declared = [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.DrctlError) and cls.__module__ == errors.__name__
    ]
    order = {cls: inspect.getsourcelines(cls)[1] for cls in declared}

    def walk(cls: type[errors.DrctlError], depth: int) -> list[ErrorClass]:
        doc = _first_paragraph(inspect.cleandoc(cls.__doc__ or ""))
        found = [ErrorClass(cls.__name__, depth, cls.exit_code, _rst_to_md(doc))]
        for sub in sorted((c for c in declared if cls in c.__bases__), key=order.__getitem__):
            found += walk(sub, depth + 1)
        return found

    return walk(errors.DrctlError, 0)


def error_codes() -> list[tuple[str, str, str]]:
    """``(code, constant, description)`` for every diagnostic code, sorted by code."""
    from drctl import diagnostics

    found = []
    for name, value in vars(diagnostics).items():
        # E: errors; W: warnings (reported, never refused).
        if (
            name[:2] in ("E_", "W_")
            and isinstance(value, str)
            and re.fullmatch(r"[EW]\d{3}", value)
        ):
            desc = ERROR_CODE_DOCS.get(value) or name[2:].replace("_", " ").lower()
            found.append((value, name, desc))
    return sorted(found)


def exit_codes() -> str:
    """``docs/exit-codes.md`` from drctl/errors.py, drctl/diagnostics.py and the lints."""
    from drctl.compiler.lints import LOGIC, TITLES

    out = [
        header("drctl/errors.py, drctl/diagnostics.py and drctl/compiler/lints.py"),
        "# Exit codes and error codes",
        "",
        "## Exit codes",
        "",
        "| exit | meaning | when |",
        "|---|---|---|",
    ]
    out += [f"| {code} | {name} | {_cell(when)} |" for code, name, when in EXIT_CODES]
    out += [
        "",
        "A run that stopped on a failed step (exit 1), at a gate (4) or on Ctrl-C (130) is "
        "resumable: `drctl resume RUN_ID` (or `--last`). A rolled-back or aborted run is not.",
        "",
        "## Errors and their exit codes",
        "",
        "Every error drctl raises on purpose is one of these classes, rendered once by the "
        "CLI on standard error as `drctl: error: MESSAGE` (with a `hint:` line when there is "
        "one) — except `RunbookInvalid`, which prints its diagnostic lines (see below) and "
        "then `drctl: N errors found`.",
        "",
        "| error | exit | meaning |",
        "|---|---|---|",
    ]
    for err in error_classes():
        indent = "&nbsp;&nbsp;" * err.depth + ("└ " if err.depth else "")
        out.append(f"| {indent}`{err.name}` | {err.exit_code} | {_cell(err.doc)} |")
    out += [
        "",
        "## Diagnostic codes",
        "",
        "`drctl validate` and `drctl plan` report each problem as "
        "`path:line:col: error CODE: message` (with a `hint:` line when there is one), all "
        "of them at once, and exit 2. `drctl validate` writes them to standard output "
        "followed by a count (`N errors in M of K files`), or as JSON or GitHub annotations "
        "with `--format json|github`. `drctl plan` (whose `--format` shapes the plan, not "
        "the errors) and the other commands that compile a runbook (`diff`, `run`, `drill`, "
        "…) write the lines as text to standard error, then `drctl: N errors found`.",
        "",
        "| code | constant | meaning |",
        "|---|---|---|",
    ]
    out += [f"| `{code}` | `{name}` | {_cell(desc)} |" for code, name, desc in error_codes()]
    out += [
        "",
        '<a id="safety-lints"></a>',
        "",
        "## Safety lints",
        "",
        "Errors unless the runbook acknowledges them by code, on the step or for the whole "
        "runbook (`acknowledge: [DR004]`).",
        "",
        "| code | lint |",
        "|---|---|",
    ]
    out += [f"| `{code}` | {_cell(title)} |" for code, title in sorted(TITLES.items())]
    out += ["", "What each rule checks, exactly:", ""]
    out += [f"- {LOGIC['terms']}"]
    out += [f"- **{code}**: {LOGIC[code]}" for code in sorted(LOGIC) if code != "terms"]
    out += [
        "",
        "`DR007` compares bytes of WAL not received (what a promotion loses; WAL received "
        "and not yet replayed is not counted): a lag-check step a promote waits for "
        "(`postgres.replication_lag`'s `max_bytes`) must not allow more than the promote's "
        "own `max_lag_bytes`, unless the promote sets `accept_data_loss`. Limits rendered "
        "from earlier steps' outputs are not known offline and are not compared. At run "
        "time the promote's preflight checks its own limit before the first fence anyway.",
        "",
        "DR006 is also checked at run time: `postgres.fence`, `postgres.promote`, "
        "`postgres.rejoin` and `postgres.follow` on a target with `managed_by: <patroni "
        "target>` ask that Patroni cluster, right before they act, whether every member's "
        "own view is paused, and fail (a `StepError`, exit 1, resumable) when it is not or "
        "when no member answers. Its second half, no `patroni.resume` of the cluster after "
        "the step, is a warning shown in the plan, never an error.",
    ]
    out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- the pages

#: Generated pages, by file name under the docs directory.
PAGES: dict[str, Callable[[], str]] = {
    "runbook-reference.md": runbook_reference,
    "step-catalogue.md": step_catalogue,
    "exit-codes.md": exit_codes,
}


def render_all() -> dict[str, str]:
    """Every generated page's text, by file name."""
    return {name: render() for name, render in PAGES.items()}


def stale(directory: Path, pages: dict[str, str] | None = None) -> list[str]:
    """Generated pages under ``directory`` that are missing or differ from the generator."""
    pages = pages if pages is not None else render_all()
    found = []
    for name, text in pages.items():
        path = directory / name
        if not path.is_file() or path.read_bytes() != text.encode("utf-8"):
            found.append(name)
    return found


def write_all(directory: Path) -> list[str]:
    """Rewrite the generated pages under ``directory``; returns the ones that changed."""
    pages = render_all()
    changed = stale(directory, pages)
    directory.mkdir(parents=True, exist_ok=True)
    for name in changed:
        (directory / name).write_bytes(pages[name].encode("utf-8"))
    return changed

"""The offline commands through the real CLI: exit codes, formats, stability, imports."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO, RUNBOOKS, run_cli

EXAMPLES = sorted(str(p.relative_to(REPO)) for p in RUNBOOKS.glob("*.yaml"))
CLIENT_LIBRARIES = (
    "psycopg",
    "pymongo",
    "boto3",
    "botocore",
    "paramiko",
    "etcd3gw",
    "requests",
    "dns",
)


def test_version() -> None:
    """``--version`` prints the package version."""
    from drctl import __version__

    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"drctl {__version__}\n"


def test_every_example_runbook_validates() -> None:
    """All files in runbooks/ are valid (required params get stand-ins)."""
    assert EXAMPLES
    result = run_cli("validate", *EXAMPLES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": ok (") == len(EXAMPLES)


def test_validate_reports_errors_in_all_formats(tmp_path: Path) -> None:
    """text gives path:line:col lines, json a document, github ::error annotations; all exit 2."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: x}\nsteps:\n  - {id: a, type: shel}\n"
    )
    text = run_cli("validate", str(bad))
    assert text.returncode == 2
    assert (
        f"{bad}:5:19: error E210: unknown step type 'shel'\n    hint: did you mean 'shell'?"
        in text.stdout
    )
    as_json = run_cli("validate", "--format", "json", str(bad))
    assert as_json.returncode == 2
    doc = json.loads(as_json.stdout)
    assert doc["valid"] is False
    assert doc["diagnostics"][0] | {"source": None} == {
        "source": None,
        "line": 5,
        "column": 19,
        "severity": "error",
        "code": "E210",
        "message": "unknown step type 'shel'",
        "hint": "did you mean 'shell'?",
    }
    github = run_cli("validate", "--format", "github", str(bad))
    assert github.returncode == 2
    assert github.stdout.startswith(
        f"::error file={bad},line=5,col=19,title=drctl E210::unknown step type 'shel'"
    )


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_plan_is_byte_identical_across_hash_seeds(fmt: str) -> None:
    """Same runbook and params give the same bytes whatever PYTHONHASHSEED is."""
    outputs = set()
    for seed in ("0", "1", "4242"):
        result = run_cli(
            "plan",
            "runbooks/generic-failover.yaml",
            "-p",
            "site=west",
            "--format",
            fmt,
            env={"PYTHONHASHSEED": seed},
        )
        assert result.returncode == 0, result.stderr
        outputs.add(result.stdout)
    assert len(outputs) == 1
    assert "sha256:" in outputs.pop()


def test_plan_json_carries_rendered_inputs_and_hash() -> None:
    """The JSON plan has numbered, rendered steps and the hash of its content."""
    result = run_cli(
        "plan", "runbooks/generic-failover.yaml", "-p", "site=east", "--format", "json"
    )
    plan = json.loads(result.stdout)
    assert [s["id"] for s in plan["steps"]][:3] == ["lag", "fence", "go"]
    assert plan["steps"][1]["inputs"]["command"] == ["./scripts/fence-primary", "--site", "west"]
    assert plan["steps"][2]["approve"] is False and plan["steps"][2]["roles"] == ["gate"]
    assert plan["hash"].startswith("sha256:")


def test_plan_without_a_required_param_fails_with_a_flag_hint() -> None:
    """plan needs real values: a missing required param exits 2 naming -p."""
    result = run_cli("plan", "runbooks/generic-failover.yaml")
    assert result.returncode == 2
    assert "parameter 'site' is required" in result.stderr
    assert "pass -p site=VALUE (one of: east, west)" in result.stderr
    assert "Traceback" not in result.stderr


def test_diff_exit_codes_and_changes(tmp_path: Path) -> None:
    """diff exits 0 for equal plans, 1 with the changes for different ones, 2 for invalid input."""
    old = RUNBOOKS / "generic-failover.yaml"
    new = tmp_path / "new.yaml"
    text = old.read_text()
    new.write_text(
        text.replace("timeout: 90s", "timeout: 2m")
        .replace(
            "  - id: go\n    type: approve\n",
            "  - id: go\n    type: approve\n    description: gate\n",
        )
        .replace(
            "  - id: tell\n",
            '  - id: page\n    type: notify\n    with: {url: "${env:PAGER}", message: hi}\n  - id: tell\n',
        )
    )
    same = run_cli("diff", str(old), str(old), "-p", "site=west")
    assert same.returncode == 0
    assert "plans are identical" in same.stdout
    changed = run_cli("diff", str(old), str(new), "-p", "site=west")
    assert changed.returncode == 1, changed.stderr
    assert "+ step page" in changed.stdout
    assert "    timeout: 90.0 → 120.0" in changed.stdout
    md = run_cli("diff", str(old), str(new), "-p", "site=west", "--format", "markdown")
    assert md.returncode == 1
    assert "**Added:** `page`" in md.stdout
    as_json = json.loads(
        run_cli("diff", str(old), str(new), "-p", "site=west", "--format", "json").stdout
    )
    assert as_json["added"] == ["page"] and as_json["equal"] is False
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: drctl/v1\n")
    invalid = run_cli("diff", str(old), str(broken), "-p", "site=west")
    assert invalid.returncode == 2
    assert f"{broken}:1:1: error E200" in invalid.stderr


def test_diff_reports_removed_gates_and_new_lints(tmp_path: Path) -> None:
    """Safety-relevant changes (a gate removed, a lint acknowledged) are called out."""
    old = RUNBOOKS / "generic-failover.yaml"
    new = tmp_path / "new.yaml"
    new.write_text(
        old.read_text()
        .replace(
            '  - id: go\n    type: approve\n    with: {message: "Promote the standby at {{ params.site }}?"}\n',
            "",
        )
        .replace("      roles: [lag_check]\n", "      roles: []\n")
        .replace("settings:", "acknowledge: [DR002]\nsettings:")
    )
    result = run_cli("diff", str(old), str(new), "-p", "site=west", "--format", "markdown")
    assert result.returncode == 1, result.stderr
    assert "⚠️ approval gate removed: `go`" in result.stdout
    assert "lint added: DR002 promote" in result.stdout


def test_schema_is_json_and_ties_step_inputs_to_types() -> None:
    """``drctl schema`` prints a JSON Schema where each type's with-model is selected by type."""
    result = run_cli("schema")
    schema = json.loads(result.stdout)
    assert schema["$defs"]["with:shell"]["properties"]["command"]
    rules = schema["$defs"]["StepSpec"]["allOf"]
    assert {r["if"]["properties"]["type"]["const"] for r in rules} >= {
        "shell",
        "http",
        "wait",
        "approve",
        "notify",
        "assert",
    }


def test_schema_accepts_every_example_and_rejects_a_bad_field() -> None:
    """The schema agrees with the compiler on the examples and on an unknown field."""
    jsonschema = pytest.importorskip("jsonschema")
    from drctl.compiler.schema import runbook_schema
    from drctl.runbook.source import load_yaml

    schema = runbook_schema()
    validator = jsonschema.Draft202012Validator(schema)
    for path in EXAMPLES:
        data = load_yaml((REPO / path).read_text(), path).data
        assert not list(validator.iter_errors(data)), path
    data = load_yaml((REPO / EXAMPLES[0]).read_text(), "x").data
    data["steps"][0]["with"]["commnd"] = "x"
    assert list(validator.iter_errors(data))


def test_steps_lists_and_describes_types() -> None:
    """The catalogue lists every built-in type and describes one with its inputs."""
    listing = run_cli("steps")
    names = [line.split()[0] for line in listing.stdout.splitlines()]
    assert {"approve", "assert", "http", "notify", "shell", "wait"} <= set(names)
    assert names == sorted(names)
    one = run_cli("steps", "shell")
    assert "command: string | list[string] (required)" in one.stdout
    unknown = run_cli("steps", "shel")
    assert unknown.returncode == 2
    assert (
        "unknown step type 'shel'" in unknown.stderr and "did you mean 'shell'?" in unknown.stderr
    )


PROBE = textwrap.dedent(
    """
    import json, sys
    from drctl.cli.app import main
    sys.argv = ["drctl", *sys.argv[1:]]
    try:
        main()
    except SystemExit:
        pass
    heavy = ("psycopg", "pymongo", "boto3", "botocore", "paramiko", "etcd3gw", "requests", "dns", "pydantic", "jinja2")
    sys.stderr.write("MODULES " + json.dumps(sorted(m for m in heavy if m in sys.modules)) + "\\n")
    """
)


def _modules_after(*args: str) -> list[str]:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=60,
    )
    line = next(x for x in result.stderr.splitlines() if x.startswith("MODULES "))
    return json.loads(line.removeprefix("MODULES "))


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("validate", "runbooks/generic-failover.yaml"),
        ("plan", "runbooks/generic-failover.yaml", "-p", "site=west"),
        ("diff", "runbooks/shell-demo.yaml", "runbooks/shell-demo.yaml"),
    ],
    ids=["help", "validate", "plan", "diff"],
)
def test_offline_commands_import_no_client_library(args: tuple[str, ...]) -> None:
    """validate/plan/diff/--help never load psycopg, pymongo, boto3, botocore or paramiko."""
    loaded = _modules_after(*args)
    assert not set(loaded) & set(CLIENT_LIBRARIES), loaded
    if args == ("--help",):
        assert "pydantic" not in loaded and "jinja2" not in loaded


#: drctl's CLI as it runs (``main``), or with the whole app whatever the command.
ONE_OR_ALL = """
import sys
from drctl.cli import app as cli
whole, sys.argv = sys.argv[1] == "whole", ["drctl", *sys.argv[2:]]
if whole:
    cli.app_for = lambda args: cli.app
cli.main()
"""


@pytest.mark.parametrize(
    "args",
    [
        ("run", "--help"),
        ("run",),
        ("run", "runbooks/shell-demo.yaml", "--bogus"),
        ("plan", "runbooks/shell-demo.yaml", "-p", "nope=1"),
        ("validate", "runbooks/generic-failover.yaml"),
        ("sandbox", "--help"),
        ("sandbox", "nope"),
        ("rnu", "x"),
        ("--help",),
        (),
    ],
)
def test_the_command_given_alone_parses_as_in_the_whole_app(args: tuple[str, ...]) -> None:
    """drctl builds only the command it is given: its help, errors, output and exit code
    are what the whole app gives."""
    import subprocess

    def cli(which: str) -> tuple[int, str, str]:
        done = subprocess.run(
            [sys.executable, "-c", ONE_OR_ALL, which, *args],
            capture_output=True, text=True, cwd=REPO, check=False, timeout=60,
        )  # fmt: skip
        return done.returncode, done.stdout, done.stderr

    assert cli("one") == cli("whole")


def test_only_the_command_given_is_built() -> None:
    """A command's name picks it alone (a group with its subcommands); anything else, the whole app."""
    from drctl.cli.app import app, app_for

    one = app_for(["run", "x.yaml", "--yes"])
    assert [c.callback.__name__ for c in one.registered_commands if c.callback] == ["run"]
    assert not one.registered_groups and one.registered_callback is app.registered_callback
    group = app_for(["sandbox", "up"])
    assert [g.name for g in group.registered_groups] == ["sandbox"]
    assert not group.registered_commands
    for args in ([], ["--help"], ["--version"], ["rnu"], ["-p", "run"]):
        assert app_for(args) is app


def test_command_modules_lists_what_each_module_registers() -> None:
    """``COMMAND_MODULES`` (which module ``drctl <command>`` imports) names every command
    of the whole app, each under the module that registers it, in help's order."""
    import typer
    from typer.main import get_command_name

    from drctl.cli.app import COMMAND_MODULES, _register, app

    listed = []
    for module, names in COMMAND_MODULES:
        alone = typer.Typer()
        _register(module, alone)
        registered = [
            c.name or get_command_name(c.callback.__name__)
            for c in alone.registered_commands
            if c.callback
        ]
        assert (module, [*registered, *(g.name for g in alone.registered_groups)]) == (
            module,
            list(names),
        )
        listed.extend(names)
    whole = [
        c.name or get_command_name(c.callback.__name__)
        for c in app.registered_commands
        if c.callback
    ]
    assert sorted(listed) == sorted([*whole, *(g.name for g in app.registered_groups)])


def test_a_command_imports_its_own_module_alone() -> None:
    """``drctl run --help`` imports drctl.cli.execute (and what it imports), none of the
    other command modules."""
    import subprocess

    probe = (
        "import sys\n"
        "from drctl.cli.app import main\n"
        "sys.argv = ['drctl', 'run', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write('MODULES ' + ' '.join(sorted(m for m in sys.modules if m.startswith('drctl.cli.'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=False, timeout=60
    )  # fmt: skip
    loaded = done.stderr.rpartition("MODULES ")[2].split()
    assert loaded == ["drctl.cli.app", "drctl.cli.execute", "drctl.cli.formats", "drctl.cli.review"]


def test_planning_reads_no_builtin_signature() -> None:
    """Planning the sandbox failover (every PostgreSQL step type, DNS, a gate) leaves
    tokenize's regular expressions uncompiled: no model it builds has a builtin default
    factory such as ``list``, whose text signature pydantic would parse with tokenize."""
    import subprocess

    probe = (
        "import sys, tokenize\n"
        "from drctl.cli.app import main\n"
        "sys.argv = ['drctl', 'plan', 'runbooks/sandbox-pg-failover.yaml']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write(f'COMPILED {tokenize._compile.cache_info().currsize}')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=False, timeout=60
    )  # fmt: skip
    assert "Plan: sandbox-pg-three-node-failover" in done.stdout, done.stderr
    assert done.stderr.rpartition("COMPILED ")[2] == "0"


def test_patroni_client_is_imported_only_for_servers_patroni_manages() -> None:
    """Compiling PostgreSQL steps (choose, fence, promote, follow, rejoin) of unmanaged
    servers loads none of the Patroni client modules."""
    import subprocess

    probe = (
        "import sys\n"
        "from drctl.compiler.compile import compile_runbook\n"
        "compile_runbook('runbooks/sandbox-pg-failover.yaml')\n"
        "print(sorted(m for m in sys.modules if m.startswith('drctl.providers.patroni')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert "drctl.providers.postgres.choose" not in done.stdout
    assert done.stdout.strip() == "[]", done.stdout


def test_third_party_step_types_register_through_entry_points(tmp_path: Path) -> None:
    """A package declaring a drctl.steps entry point adds a usable step type; a broken one is a clear error."""
    (tmp_path / "acme_steps.py").write_text(
        textwrap.dedent(
            '''
            from drctl.steps.base import Role, StepInputs, StepType

            class PageInputs(StepInputs):
                team: str

            class Page(StepType):
                """Page a team."""
                name = "acme.page"
                Inputs = PageInputs
                roles = frozenset({Role.VERIFY})

                def describe(self, inputs, target):
                    return f"page {inputs.team}"

                def apply(self, ctx):
                    return None
            '''
        )
    )
    dist = tmp_path / "acme_steps-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-steps\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[drctl.steps]\nacme.page = acme_steps:Page\nacme.broken = acme_steps:Missing\n"
    )
    runbook = tmp_path / "r.yaml"
    runbook.write_text(
        "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: r}\nsteps:\n"
        "  - {id: p, type: acme.page, with: {team: dba}}\n"
    )
    env = {"PYTHONPATH": str(tmp_path)}
    listing = run_cli("steps", env=env)
    assert any(
        line.split(None, 1) == ["acme.page", "Page a team."] for line in listing.stdout.splitlines()
    )
    plan = run_cli("plan", str(runbook), env=env)
    assert plan.returncode == 0, plan.stderr
    assert "page dba" in plan.stdout
    broken = run_cli("validate", str(runbook).replace("r.yaml", "b.yaml"), env=env)
    assert broken.returncode == 2
    runbook.write_text(runbook.read_text().replace("acme.page, with: {team: dba}", "acme.broken"))
    failed = run_cli("validate", str(runbook), env=env)
    assert failed.returncode == 2
    assert "step type 'acme.broken' (acme_steps:Missing) failed to load" in failed.stdout

"""``drctl review`` and the GitHub Action's script, against temporary git repositories."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, RUNBOOKS, run_cli

GIT_TIMEOUT = 30
BROKEN = (
    "apiVersion: drctl/v1\nkind: Runbook\nmetadata: {name: x}\nsteps:\n  - {id: a, type: shel}\n"
)
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT,
        check=True,
        env={**os.environ, **GIT_ENV},
    )
    return result.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository whose main branch holds two example runbooks, checked out on branch pr."""
    root = tmp_path / "repo"
    (root / "runbooks").mkdir(parents=True)
    for name in ("generic-failover.yaml", "shell-demo.yaml"):
        shutil.copy(RUNBOOKS / name, root / "runbooks" / name)
    (root / "README.md").write_text("a repo\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    git(root, "checkout", "-q", "-b", "pr")
    return root


def commit(root: Path, message: str = "change") -> None:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def drop_gate(root: Path) -> None:
    """Remove the approval step `go` and lengthen the promote's timeout."""
    path = root / "runbooks" / "generic-failover.yaml"
    edit(
        path,
        '  - id: go\n    type: approve\n    with: {message: "Promote the standby at {{ params.site }}?"}\n',
        "",
    )
    edit(path, "timeout: 90s", "timeout: 120s")


def review(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli("review", *args, cwd=str(root), env={**GIT_ENV, **(env or {})})


def test_no_runbook_changed(repo: Path) -> None:
    """A change that touches no runbook gives a one-line review and exit 0."""
    (repo / "README.md").write_text("changed\n")
    commit(repo)
    result = review(repo, "main")
    assert result.returncode == 0, result.stderr
    assert "No runbook changed against `main`" in result.stdout


def test_modified_runbook_shows_the_plan_diff_and_highlights_a_removed_gate(repo: Path) -> None:
    """A modified runbook gets a plan diff with the removed gate flagged, and the new plan folded."""
    drop_gate(repo)
    commit(repo)
    result = review(repo, "main")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert (
        "| `runbooks/generic-failover.yaml` | modified | ✅ valid; plan changed: 1 removed, 1 changed; ⚠️ safety-relevant changes |"
        in out
    )
    assert (
        "#### drctl diff: `main:runbooks/generic-failover.yaml` → `runbooks/generic-failover.yaml`"
        in out
    )
    assert "> - ⚠️ approval gate removed: `go`" in out
    assert "| `timeout` | 90.0 | 120.0 |" in out
    assert "Planned with stand-ins for required params `site`." in out
    assert "<details><summary>The plan after the change</summary>" in out
    assert "#### drctl plan: `generic-failover`" in out


def test_added_lint_is_highlighted(repo: Path) -> None:
    """Dropping the fence and acknowledging DR001 shows the new lint as a safety-relevant change."""
    path = repo / "runbooks" / "generic-failover.yaml"
    text = path.read_text()
    start = text.index("  - id: fence\n")
    end = text.index("  - id: go\n")
    text = text[:start] + text[end:]
    text = text.replace("    timeout: 90s\n", "    timeout: 90s\n    acknowledge: [DR001]\n")
    path.write_text(text)
    commit(repo)
    result = review(repo, "main")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "> - ⚠️ lint added: DR001 promote:" in result.stdout
    assert "acknowledged lints DR001" in result.stdout


def test_added_runbook_anywhere_is_planned_and_other_yaml_ignored(repo: Path) -> None:
    """An added file declaring apiVersion drctl/v1 is planned; other YAML outside runbooks/ is not."""
    (repo / "ops").mkdir()
    shutil.copy(RUNBOOKS / "shell-demo.yaml", repo / "ops" / "demo.yml")
    (repo / "ops" / "ci.yaml").write_text("on: push\n")
    commit(repo)
    result = review(repo, "main")
    assert result.returncode == 0, result.stderr
    assert "| `ops/demo.yml` | added | ✅ valid" in result.stdout
    assert "#### drctl plan: `shell-demo`" in result.stdout
    assert "ci.yaml" not in result.stdout


def test_broken_runbook_fails_the_review_with_its_errors(repo: Path) -> None:
    """An added runbook that does not compile exits 2 and shows path:line:col errors."""
    (repo / "runbooks" / "broken.yaml").write_text(BROKEN)
    commit(repo)
    result = review(repo, "main")
    assert result.returncode == 2, result.stderr
    assert "| `runbooks/broken.yaml` | added | ❌ invalid: 1 error |" in result.stdout
    assert "> 1 runbook will not compile: `runbooks/broken.yaml`" in result.stdout
    assert "runbooks/broken.yaml:5:19: error E210: unknown step type 'shel'" in result.stdout
    assert "Traceback" not in result.stderr


def test_fixing_a_broken_base_version_passes(repo: Path) -> None:
    """A runbook broken on the base and fixed by the change passes, with the base's errors shown."""
    (repo / "runbooks" / "fixme.yaml").write_text(BROKEN)
    commit(repo)
    git(repo, "branch", "-q", "broken-base")
    (repo / "runbooks" / "fixme.yaml").write_text(
        BROKEN.replace("shel", "wait, with: {duration: 1s}")
    )
    commit(repo)
    result = review(repo, "broken-base")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "base version was invalid" in result.stdout
    assert "broken-base:runbooks/fixme.yaml:5:19: error E210" in result.stdout


def test_deleted_runbook_is_listed(repo: Path) -> None:
    """A deleted runbook appears in the summary and does not fail the review."""
    git(repo, "rm", "-q", "runbooks/shell-demo.yaml")
    commit(repo)
    result = review(repo, "main")
    assert result.returncode == 0, result.stderr
    assert "| `runbooks/shell-demo.yaml` | deleted | 🗑️ deleted |" in result.stdout


def test_renamed_runbook_is_diffed_against_its_old_path(repo: Path) -> None:
    """A renamed runbook is compared with the file at its old path: same plan, shown as a rename."""
    git(repo, "mv", "runbooks/shell-demo.yaml", "runbooks/demo.yaml")
    commit(repo)
    result = review(repo, "main")
    assert result.returncode == 0, result.stderr
    assert (
        "| `runbooks/demo.yaml` | renamed from `runbooks/shell-demo.yaml` | ✅ valid; plan unchanged |"
        in result.stdout
    )
    assert "No change to the plan." in result.stdout


def test_uncommitted_and_untracked_changes_are_reviewed(repo: Path) -> None:
    """The working tree is compared with the merge base, so edits not yet committed count."""
    drop_gate(repo)
    (repo / "runbooks" / "new.yaml").write_text(BROKEN)
    result = review(repo, "main")
    assert result.returncode == 2
    assert "| `runbooks/generic-failover.yaml` | modified |" in result.stdout
    assert "| `runbooks/new.yaml` | added | ❌ invalid" in result.stdout


def test_changes_on_the_base_branch_are_not_reviewed(repo: Path) -> None:
    """Runbooks changed on the base after the branch point are not part of the review."""
    git(repo, "checkout", "-q", "main")
    drop_gate(repo)
    commit(repo, "main moves on")
    git(repo, "checkout", "-q", "pr")
    result = review(repo, "main")
    assert result.returncode == 0, result.stderr
    assert "No runbook changed" in result.stdout


def test_paths_restrict_the_review_and_list_prints_them(repo: Path) -> None:
    """PATHS limit the review to those files; --list prints the changed runbooks that exist."""
    drop_gate(repo)
    (repo / "runbooks" / "new.yaml").write_text(BROKEN)
    commit(repo)
    only = review(repo, "main", "runbooks/generic-failover.yaml")
    assert only.returncode == 0, only.stderr
    assert "new.yaml" not in only.stdout
    listed = review(repo, "main", "--list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "runbooks/generic-failover.yaml\nrunbooks/new.yaml\n"


def test_params_are_passed_to_the_runbooks_that_declare_them(repo: Path) -> None:
    """-p values reach runbooks declaring them (no stand-ins then); an undeclared one is exit 2."""
    drop_gate(repo)
    (repo / "runbooks" / "other.yaml").write_text((RUNBOOKS / "shell-demo.yaml").read_text())
    commit(repo)
    given = review(repo, "main", "-p", "site=west")
    assert given.returncode == 0, given.stderr
    assert "stand-ins" not in given.stdout
    assert "`site=west`" in given.stdout
    unknown = review(repo, "main", "-p", "sight=west")
    assert unknown.returncode == 2
    assert "no changed runbook declares 'sight'" in unknown.stderr


def test_output_is_byte_stable(repo: Path) -> None:
    """The same change gives the same bytes whatever the hash seed."""
    drop_gate(repo)
    (repo / "runbooks" / "broken.yaml").write_text(BROKEN)
    commit(repo)
    outputs = {review(repo, "main", env={"PYTHONHASHSEED": seed}).stdout for seed in ("0", "7")}
    assert len(outputs) == 1


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no-such-branch", "drctl: error: 'no-such-branch' is not a commit in this repository"),
        ("main..pr", "drctl: error: 'main..pr' is not a commit in this repository"),
    ],
)
def test_bad_ref_is_a_usage_error(repo: Path, ref: str, message: str) -> None:
    """An unknown ref exits 2 with one clear line and no traceback."""
    result = review(repo, ref)
    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_outside_a_git_repository_is_a_usage_error(tmp_path: Path) -> None:
    """Running outside any git checkout exits 2 naming what git could not do."""
    result = run_cli(
        "review",
        "main",
        cwd=str(tmp_path),
        env={**GIT_ENV, "GIT_CEILING_DIRECTORIES": str(tmp_path)},
    )
    assert result.returncode == 2
    assert result.stderr.startswith("drctl: error: git could not find the repository")
    assert "Traceback" not in result.stderr


def test_review_imports_no_client_library(repo: Path) -> None:
    """Reviewing a change loads none of psycopg, pymongo, boto3, botocore or paramiko."""
    from tests.unit.test_cli import CLIENT_LIBRARIES, PROBE

    drop_gate(repo)
    commit(repo)
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "review", "main"],
        capture_output=True,
        text=True,
        cwd=repo,
        env={**os.environ, **GIT_ENV, "PYTHONPATH": str(REPO)},
        check=False,
        timeout=60,
    )
    assert "approval gate removed" in result.stdout, result.stderr
    line = next(x for x in result.stderr.splitlines() if x.startswith("MODULES "))
    assert not set(json.loads(line.removeprefix("MODULES "))) & set(CLIENT_LIBRARIES)


# -- the GitHub Action ---------------------------------------------------------------

FAKE_GH = """\
#!/usr/bin/env bash
# Records each call (and the body it was given) instead of talking to GitHub.
{ printf '%s\\n' "gh $*"; } >> "$FAKE_GH_LOG"
for arg in "$@"; do
    case "$arg" in
        body=@*) printf 'BODY<<\\n%s\\n>>BODY\\n' "$(cat "${arg#body=@}")" >> "$FAKE_GH_LOG" ;;
    esac
done
prev=""
for arg in "$@"; do
    if [ "$prev" = "--body-file" ]; then
        printf 'BODY<<\\n%s\\n>>BODY\\n' "$(cat "$arg")" >> "$FAKE_GH_LOG"
    fi
    prev="$arg"
done
if [ "$1" = "api" ] && [ "$2" = "--paginate" ]; then
    printf '%s' "${FAKE_GH_EXISTING:-}"
fi
"""


def run_action(
    root: Path, tmp_path: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run action/review.sh in ``root`` with a fake gh and this venv's drctl on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    gh = bin_dir / "gh"
    gh.write_text(FAKE_GH)
    gh.chmod(0o755)
    log = tmp_path / "gh.log"
    log.write_text("")
    summary = tmp_path / "summary.md"
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
    result = subprocess.run(
        ["bash", str(REPO / "action" / "review.sh")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            **os.environ,
            **GIT_ENV,
            "PATH": path,
            "FAKE_GH_LOG": str(log),
            "DRCTL_BASE_REF": "main",
            "PR_NUMBER": "17",
            "GITHUB_REPOSITORY": "acme/dr",
            "GITHUB_STEP_SUMMARY": str(summary),
            "RUNNER_TEMP": str(tmp_path),
            **env,
        },
    )
    return result, log.read_text()


def test_action_script_annotates_and_posts_one_comment(repo: Path, tmp_path: Path) -> None:
    """The action's script annotates the broken runbook, comments the review, and exits 2."""
    drop_gate(repo)
    (repo / "runbooks" / "broken.yaml").write_text(BROKEN)
    commit(repo)
    result, log = run_action(repo, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        "::error file=runbooks/broken.yaml,line=5,col=19,title=drctl E210::unknown step type 'shel'"
        in result.stdout
    )
    calls = [line for line in log.splitlines() if line.startswith("gh ")]
    assert calls[0].startswith("gh api --paginate repos/acme/dr/issues/17/comments --jq ")
    assert calls[1].startswith("gh pr comment 17 --repo acme/dr --body-file ")
    body = log.split("BODY<<\n", 1)[1].split("\n>>BODY", 1)[0]
    assert body.startswith("<!-- drctl-review -->\n## drctl review\n")
    assert "> - ⚠️ approval gate removed: `go`" in body
    assert "runbooks/broken.yaml:5:19: error E210" in body
    assert "## drctl review" in (tmp_path / "summary.md").read_text()


def test_action_script_updates_its_earlier_comment(repo: Path, tmp_path: Path) -> None:
    """When a comment with the marker exists, the script edits it instead of adding another."""
    drop_gate(repo)
    commit(repo)
    result, log = run_action(repo, tmp_path, FAKE_GH_EXISTING="4242\n")
    assert result.returncode == 0, result.stdout + result.stderr
    calls = [line for line in log.splitlines() if line.startswith("gh ")]
    assert len(calls) == 2
    assert calls[1].startswith("gh api --method PATCH repos/acme/dr/issues/comments/4242 -F body=@")
    assert "pr comment" not in log
    assert "#### drctl diff:" in log


def test_action_script_without_a_pr_only_reviews(repo: Path, tmp_path: Path) -> None:
    """Outside a pull request (no PR_NUMBER) nothing is posted; a bad ref still exits 2."""
    result, log = run_action(repo, tmp_path, PR_NUMBER="", DRCTL_BASE_REF="gone")
    assert result.returncode == 2
    assert "'gone' is not a commit" in result.stderr
    assert log == ""


def test_action_and_hook_definitions_point_at_real_things() -> None:
    """action.yml runs the script that exists and installs from its own path; the hook runs validate."""
    action = yaml.safe_load((REPO / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    assert set(action["inputs"]) >= {"base-ref", "paths", "python-version"}
    runs = [step.get("run", "") for step in action["runs"]["steps"]]
    assert any(
        'pip install --quiet --disable-pip-version-check "${{ github.action_path }}"' in r
        for r in runs
    )
    assert any("action/review.sh" in r for r in runs)
    assert (REPO / "action" / "review.sh").is_file()
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hooks[0]["id"] == "drctl-validate"
    assert hooks[0]["entry"] == "drctl validate"
    assert hooks[0]["language"] == "python"
    docs = (REPO / "docs" / "pr-review.md").read_text()
    assert "uses: " in docs and "fetch-depth: 0" in docs
    example = textwrap.dedent(docs.split("```yaml\n", 1)[1].split("```", 1)[0])
    workflow = yaml.safe_load(example)
    assert workflow["permissions"]["pull-requests"] == "write"

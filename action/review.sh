#!/usr/bin/env bash
# drctl's pull-request review, as run by action.yml (and by tests/unit/test_review.py).
#
#   1. if the base commit is not in the checkout (shallow clone), `git fetch origin
#      "$base"` first (drctl review itself never fetches);
#   2. `drctl validate --format github` on the changed runbooks: problems become
#      annotations on the PR's "Files changed" tab;
#   3. `drctl review` writes one markdown document;
#   4. that document is posted as one PR comment, updated in place on every push
#      (found again by a hidden marker), and appended to the job summary.
#
# Environment: DRCTL_BASE_REF (required), DRCTL_PATHS (newline- or space-separated,
# optional), DRCTL_COMMENT (true/false, default true), PR_NUMBER and GITHUB_REPOSITORY
# (to comment; without PR_NUMBER nothing is posted), GH_TOKEN (for gh).
# Exit status: drctl review's (0 all changed runbooks valid, 2 one is invalid or git failed),
# except 1 when the review passed but posting or updating the PR comment failed.
set -uo pipefail

base="${DRCTL_BASE_REF:?DRCTL_BASE_REF is required (the base branch or commit)}"
marker='<!-- drctl-review -->'
limit=65000  # GitHub refuses comments over 65536 characters
work="$(mktemp -d "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/drctl-review.XXXXXX")"
trap 'rm -rf "$work"' EXIT

read -r -a paths <<<"$(printf '%s' "${DRCTL_PATHS:-}" | tr '\n' ' ')"

if ! git rev-parse --verify --quiet "$base^{commit}" >/dev/null; then
    # A shallow checkout may lack the base: fetch it (no failure here; drctl reports it).
    git fetch --quiet --no-tags origin "$base" 2>/dev/null || true
    if git rev-parse --verify --quiet FETCH_HEAD >/dev/null &&
        ! git rev-parse --verify --quiet "$base^{commit}" >/dev/null; then
        base="$(git rev-parse FETCH_HEAD)"
    fi
fi

status=0
if drctl review "$base" "${paths[@]}" --list >"$work/changed"; then
    mapfile -t changed <"$work/changed"
    if [ "${#changed[@]}" -gt 0 ]; then
        drctl validate --format github "${changed[@]}" || true
    fi
    drctl review "$base" "${paths[@]}" >"$work/review.md" || status=$?
else
    status=$?
    {
        echo "## drctl review"
        echo
        echo "drctl could not list the changed runbooks against \`$base\` (exit $status); see the job log."
    } >"$work/review.md"
fi

{
    echo "$marker"
    if [ "$(wc -c <"$work/review.md")" -gt "$limit" ]; then
        head -c "$limit" "$work/review.md" | sed '$d'  # whole lines only
        echo
        echo
        echo "_The review is too long for one comment and was cut; the job summary has all of it._"
    else
        cat "$work/review.md"
    fi
} >"$work/comment.md"

if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    cat "$work/review.md" >>"$GITHUB_STEP_SUMMARY"
fi

post_failed() {
    echo "drctl review: could not post the PR comment" >&2
    if [ "$status" -eq 0 ]; then status=1; fi
}

if [ "${DRCTL_COMMENT:-true}" = "true" ] && [ -n "${PR_NUMBER:-}" ]; then
    repo="${GITHUB_REPOSITORY:?GITHUB_REPOSITORY is required to comment}"
    existing="$(gh api --paginate "repos/$repo/issues/$PR_NUMBER/comments" \
        --jq ".[] | select(.body | startswith(\"$marker\")) | .id" | head -n 1)" || existing=""
    if [ -n "$existing" ]; then
        gh api --method PATCH "repos/$repo/issues/comments/$existing" -F "body=@$work/comment.md" >/dev/null || post_failed
    else
        gh pr comment "$PR_NUMBER" --repo "$repo" --body-file "$work/comment.md" || post_failed
    fi
fi

exit "$status"

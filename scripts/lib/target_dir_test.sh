#!/usr/bin/env bash
# Checks that scripts find cargo's output where cargo puts it: cargo_target_dir follows
# CARGO_TARGET_DIR, and no script names a fixed target/ directory for a binary.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=target_dir.sh
source "$ROOT/scripts/lib/target_dir.sh"
want=/tmp/agentd-elsewhere-target
got="$(CARGO_TARGET_DIR=$want cargo_target_dir "$ROOT")"
[[ $got == "$want" ]] || { echo "cargo_target_dir: expected $want, got $got" >&2; exit 1; }
# Comments and the flamegraph's own --target-dir excepted.
bad="$(grep -rnE '(\$ROOT/|[[:space:]=])target/release/' "$ROOT/scripts" --include='*.sh' \
    | grep -vE '^[^:]+:[0-9]+:[[:space:]]*#' | grep -v 'PROFILE_DIR_REL' || true)"
[[ -z $bad ]] || { echo "scripts assuming target/:" >&2; echo "$bad" >&2; exit 1; }
echo "target dir: 2 passed, 0 failed"

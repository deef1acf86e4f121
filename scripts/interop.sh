#!/usr/bin/env bash
# Interop check: agentd judged by the official Python package sentient-agent-framework 0.3.0.
#
#   scripts/interop.sh                     # build (cargo build --release) and check
#   AGENTD_BIN=path/to/agentd scripts/interop.sh   # check an existing binary, no build
#
# Creates .venv-interop/ at the repo root (ignored by git), installs the pinned
# scripts/interop/requirements.txt into it, starts agentd on a free 127.0.0.1 port,
# waits for GET /health/live, runs scripts/interop/check.py, and stops the server.
# Exit status: 0 when every case passed, non-zero otherwise.
# Other knobs: PYTHON (interpreter for the venv, default python3), INTEROP_VENV
# (venv path), INTEROP_TIMEOUT (seconds for check.py, default 180).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="${INTEROP_VENV:-$ROOT/.venv-interop}"
REQS="$ROOT/scripts/interop/requirements.txt"
CHECK="$ROOT/scripts/interop/check.py"

log() { printf 'interop.sh: %s\n' "$*" >&2; }

# --- venv ---------------------------------------------------------------------
# sentient_agent_framework 0.3.0 imports typing.Self (interface/session.py), so it
# needs Python >= 3.11 although its metadata says >= 3.9.
# shellcheck source=lib/venv.sh
source "$ROOT/scripts/lib/venv.sh"
ensure_venv "$VENV" "$REQS" 3.11

# --- binary -------------------------------------------------------------------
if [[ -n "${AGENTD_BIN:-}" ]]; then
    BIN="$AGENTD_BIN"
else
    log "cargo build --release"
    cargo build --release --bin agentd
    BIN="$(source "$ROOT/scripts/lib/target_dir.sh"; cargo_target_dir "$ROOT")/release/agentd"
fi
[[ -x "$BIN" ]] || { log "no executable agentd at $BIN"; exit 1; }

# --- server -------------------------------------------------------------------
PORT_NUM="$("$VPY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
BASE="http://127.0.0.1:$PORT_NUM"
SERVER_LOG="$(mktemp -t agentd-interop.XXXXXX.log)"
SERVER_PID=""

cleanup() {
    local rc=$?
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            log "agentd (pid $SERVER_PID) ignored SIGTERM for 5 s; sending SIGKILL"
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $rc -ne 0 && -s "$SERVER_LOG" ]]; then
        log "last lines of the agentd log ($SERVER_LOG):"
        tail -n 30 "$SERVER_LOG" >&2 || true
    else
        rm -f "$SERVER_LOG"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting $BIN on $BASE"
PORT="$PORT_NUM" HOST=127.0.0.1 WORKERS=2 NODE_ENV=production ENABLE_METRICS=true "$BIN" >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

# Wait for GET /health/live == 200, at most ~10 s.
if ! "$VPY" - "$BASE/health/live" "$SERVER_PID" <<'EOF'
import os, sys, time, urllib.request, urllib.error
url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 10.0
while time.monotonic() < deadline:
    try:
        with open(f"/proc/{pid}/stat") as f:
            dead = f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        dead = True
    if dead:
        print(f"agentd exited before {url} answered", file=sys.stderr); sys.exit(1)
    try:
        with urllib.request.urlopen(url, timeout=1.0) as r:
            if r.status == 200:
                sys.exit(0)
    except (urllib.error.URLError, OSError):
        pass
    time.sleep(0.1)
print(f"{url} did not answer 200 within 10 s", file=sys.stderr); sys.exit(1)
EOF
then
    log "agentd did not become live"
    exit 1
fi
log "agentd is live (pid $SERVER_PID)"

# --- check --------------------------------------------------------------------
timeout "${INTEROP_TIMEOUT:-180}" "$VPY" "$CHECK" "$BASE"
timeout "${INTEROP_TIMEOUT:-180}" "$VPY" "$ROOT/scripts/interop/ws_check.py" "$BASE"
timeout 60 "$VPY" "$ROOT/scripts/interop/metrics_check.py" "$BASE"

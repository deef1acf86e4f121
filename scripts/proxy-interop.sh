#!/usr/bin/env bash
# Proxy interop check: agentd with AGENT=proxy in front of the real Python reference
# server (sentient-agent-framework 0.3.0's DefaultServer running
# scripts/interop/reference_agent.py), judged by the official package.
#
#   scripts/proxy-interop.sh                         # build (cargo build --release) and check
#   AGENTD_BIN=path/to/agentd scripts/proxy-interop.sh   # check an existing binary, no build
#   scripts/proxy-interop.sh --setup-only            # only create/refresh the venv, print its python
#
# Creates .venv-proxy/ at the repo root (ignored by git) with the pinned
# scripts/interop/proxy-requirements.txt, starts the reference agent on a free
# 127.0.0.1 port and agentd in front of it on another (WORKERS=2), waits for the
# upstream to answer and for agentd's /health/ready, runs scripts/interop/proxy_check.py,
# and stops both (by PID). Exit status: 0 when every case passed.
# Knobs: PYTHON (interpreter for the venv, default python3, needs 3.11+), PROXY_VENV
# (venv path), PROXY_INTEROP_TIMEOUT (seconds for the check, default 120).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="${PROXY_VENV:-$ROOT/.venv-proxy}"
REQS="$ROOT/scripts/interop/proxy-requirements.txt"
INTEROP="$ROOT/scripts/interop"

log() { printf 'proxy-interop.sh: %s\n' "$*" >&2; }

# --- venv ---------------------------------------------------------------------
# sentient_agent_framework 0.3.0 imports typing.Self: Python 3.11 or later.
# shellcheck source=lib/venv.sh
source "$ROOT/scripts/lib/venv.sh"
ensure_venv "$VENV" "$REQS" 3.11
if [[ ${1:-} == --setup-only ]]; then
    echo "$VPY"
    exit 0
fi

# --- binary -------------------------------------------------------------------
if [[ -n "${AGENTD_BIN:-}" ]]; then
    BIN="$AGENTD_BIN"
else
    log "cargo build --release"
    cargo build --release --bin agentd
    BIN="$(source "$ROOT/scripts/lib/target_dir.sh"; cargo_target_dir "$ROOT")/release/agentd"
fi
[[ -x "$BIN" ]] || { log "no executable agentd at $BIN"; exit 1; }

# --- processes ----------------------------------------------------------------
free_port() { "$VPY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
UP_PORT="$(free_port)"
PX_PORT="$(free_port)"
UPSTREAM="http://127.0.0.1:$UP_PORT/assist"
BASE="http://127.0.0.1:$PX_PORT"
UP_LOG="$(mktemp -t agentd-proxy-upstream.XXXXXX.log)"
PX_LOG="$(mktemp -t agentd-proxy.XXXXXX.log)"
UP_PID=""
PX_PID=""

stop() {
    local pid=$1
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    stop "$PX_PID"
    stop "$UP_PID"
    if [[ $rc -ne 0 ]]; then
        for f in "$UP_LOG" "$PX_LOG"; do
            [[ -s "$f" ]] && { log "last lines of $f:"; tail -n 30 "$f" >&2 || true; }
        done
    else
        rm -f "$UP_LOG" "$PX_LOG"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for URL PID WANT_STATUS: polls URL until it answers WANT_STATUS (10 s at most),
# failing early if PID died.
wait_for() {
    "$VPY" - "$1" "$2" "$3" <<'EOF'
import sys, time, urllib.request, urllib.error
url, pid, want = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + 10.0
while time.monotonic() < deadline:
    try:
        with open(f"/proc/{pid}/stat") as f:
            dead = f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        dead = True
    if dead:
        sys.exit(f"the process serving {url} exited")
    try:
        with urllib.request.urlopen(url, timeout=1.0) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (urllib.error.URLError, OSError):
        status = None
    if status == want:
        sys.exit(0)
    time.sleep(0.1)
sys.exit(f"{url} did not answer {want} within 10 s")
EOF
}

log "starting the reference agent on $UPSTREAM"
(cd "$INTEROP" && exec "$VPY" reference_agent.py "$UP_PORT") >"$UP_LOG" 2>&1 &
UP_PID=$!
# DefaultServer mounts only POST /assist: a GET answers 405 once it serves.
wait_for "$UPSTREAM" "$UP_PID" 405 || { log "the reference agent did not come up"; exit 1; }

log "starting $BIN (AGENT=proxy) on $BASE"
AGENT=proxy AGENT_UPSTREAMS="$UPSTREAM" PORT="$PX_PORT" HOST=127.0.0.1 WORKERS=2 \
    NODE_ENV=production "$BIN" >"$PX_LOG" 2>&1 &
PX_PID=$!
wait_for "$BASE/health/ready" "$PX_PID" 200 || { log "agentd did not become ready"; exit 1; }

# --- check --------------------------------------------------------------------
cd "$INTEROP"
timeout "${PROXY_INTEROP_TIMEOUT:-120}" "$VPY" proxy_check.py "$BASE" "$UPSTREAM"

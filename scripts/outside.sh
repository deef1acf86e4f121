#!/usr/bin/env bash
# Outside-client suite: agentd spoken to by clients nobody on this project wrote.
#
#   scripts/outside.sh                            # build (cargo build --release) and check
#   AGENTD_BIN=path/to/agentd scripts/outside.sh  # check an existing binary, no build
#                                                 # (FAKE_LLM_BIN likewise for fake-llm)
#   scripts/outside.sh --only node-ws,pyjwt       # some groups only (GROUPS in run.py:
#                                                 # chromium, node-eventsource, node-ws,
#                                                 # httpx-sse, pyjwt, promtool, aiohttp,
#                                                 # openai-python, node-ai-sdk, openapi,
#                                                 # playground, mcp-python, a2a-python,
#                                                 # resume-python, a2a-js, mcp-fastmcp,
#                                                 # a2a-python-v03)
#
# Clients: headless Chromium (Debian `chromium`) on a page of another origin using
# EventSource on /stream, WebSocket on /ws and fetch; the npm `eventsource` and `ws`
# packages; Python httpx-sse and aiohttp judged by the official sentient-agent-framework
# 0.3.0 models; tokens minted by PyJWT; `promtool check metrics` (Debian `prometheus`);
# the official `openai` Python SDK (sync, async, non-streaming) and the `ai` npm package
# with `@ai-sdk/openai-compatible` on /v1/chat/completions, against the echo, llm (the
# in-repo fake-llm upstream) and proxy agents; the official `mcp` Python SDK and
# fastmcp's Client on /mcp; the official `a2a-sdk` Python client (1.x, and 0.3.x on the
# A2A 0.3 method names) and `@a2a-js/sdk` on the A2A front door; resumable streams across
# two replicas sharing a redis-server.
# Each check starts its own agentd on free 127.0.0.1 ports and stops it by PID.
#
# Installs what it needs: the pinned scripts/outside/requirements.txt into
# .venv-outside/ (scripts/lib/venv.sh), scripts/outside/fastmcp-requirements.txt into
# .venv-outside-fastmcp/ (OUTSIDE_FASTMCP_VENV), scripts/outside/a2a03-requirements.txt
# into .venv-outside-a2a03/ (OUTSIDE_A2A03_VENV), the locked npm packages of
# scripts/outside/node/ (npm ci). chromium, promtool and node must be on the machine
# (.ci/run installs them).
# Logs, /metrics text and screenshots go to OUTSIDE_OUT (default: a new temporary
# folder, printed). Other knobs: PYTHON, OUTSIDE_VENV, OUTSIDE_TIMEOUT (seconds for
# the whole run, default 480), CHROMIUM (default /usr/bin/chromium).
# Exit status: 0 when every check passed; the last line is "N passed, M failed".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="${OUTSIDE_VENV:-$ROOT/.venv-outside}"
DIR="$ROOT/scripts/outside"
NODE_DIR="$DIR/node"

log() { printf 'outside.sh: %s\n' "$*" >&2; }

for tool in node npm; do
    command -v "$tool" >/dev/null || { log "$tool is missing (Debian: apt-get install nodejs npm)"; exit 1; }
done

# --- Python venv (sentient_agent_framework 0.3.0 needs Python >= 3.11) ---------
# shellcheck source=lib/venv.sh
source "$ROOT/scripts/lib/venv.sh"
ensure_venv "$VENV" "$DIR/requirements.txt" 3.11
OUTSIDE_PY="$VPY"
# fastmcp's client needs a newer Starlette than sentient-agent-framework's pins allow: its
# own venv, run by the mcp-fastmcp group as a separate process.
ensure_venv "${OUTSIDE_FASTMCP_VENV:-$ROOT/.venv-outside-fastmcp}" "$DIR/fastmcp-requirements.txt" 3.11
export FASTMCP_PY="$VPY"
# The A2A 0.3 client (a2a-sdk 0.3.x) next to the 1.x one: its own venv, run by the
# a2a-python-v03 group as a separate process.
ensure_venv "${OUTSIDE_A2A03_VENV:-$ROOT/.venv-outside-a2a03}" "$DIR/a2a03-requirements.txt" 3.11
export A2A03_PY="$VPY"
VPY="$OUTSIDE_PY"

# --- npm packages, from the lock file ------------------------------------------
lock_hash="$(sha256sum "$NODE_DIR/package-lock.json" | cut -d' ' -f1)"
if [[ "$(cat "$NODE_DIR/node_modules/.lock-sha256" 2>/dev/null || true)" != "$lock_hash" ]]; then
    log "npm ci in scripts/outside/node"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_hash" > "$NODE_DIR/node_modules/.lock-sha256"
fi

# --- binary ---------------------------------------------------------------------
if [[ -n "${AGENTD_BIN:-}" ]]; then
    # Absolute: the checks run agentd from other folders.
    BIN="$(realpath -- "$AGENTD_BIN")"
else
    log "cargo build --release"
    cargo build --release --bin agentd
    # shellcheck source=lib/target_dir.sh
    source "$ROOT/scripts/lib/target_dir.sh"
    BIN="$(cargo_target_dir "$ROOT")/release/agentd"
fi
[[ -x "$BIN" ]] || { log "no executable agentd at $BIN"; exit 1; }
if [[ -n "${FAKE_LLM_BIN:-}" ]]; then
    FAKE_LLM_BIN="$(realpath -- "$FAKE_LLM_BIN")"
else
    log "cargo build --release -p fake-llm"
    cargo build --release -p fake-llm --bin fake-llm
    # shellcheck source=lib/target_dir.sh
    source "$ROOT/scripts/lib/target_dir.sh"
    FAKE_LLM_BIN="$(cargo_target_dir "$ROOT")/release/fake-llm"
fi
[[ -x "$FAKE_LLM_BIN" ]] || { log "no executable fake-llm at $FAKE_LLM_BIN"; exit 1; }
export FAKE_LLM_BIN

# --- run ------------------------------------------------------------------------
OUT="${OUTSIDE_OUT:-$(mktemp -d -t agentd-outside.XXXXXX)}"
mkdir -p "$OUT"
log "agentd $BIN; output in $OUT"
cd "$DIR"
timeout -k 10 "${OUTSIDE_TIMEOUT:-480}" "$VPY" "$DIR/run.py" "$BIN" "$OUT" "$@"

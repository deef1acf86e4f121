#!/usr/bin/env bash
# scripts/soak.sh: agentd under mixed load for a long time, its memory sampled every
# second, judged for growth and for errors beyond the injected ones.
#
# What runs (all on 127.0.0.1, port 0, ended by PID at the end or on failure):
#   fake-llm      the fake OpenAI upstream (target/release/fake-llm), LLM_TOKENS tokens
#                 LLM_TOKEN_DELAY_MS apart per answer
#   agentd echo   AGENT=echo, BODY_LIMIT=4096: GET /health, /health/live (also with
#                 Connection: close), POST /agent, GET /stream, GET /ws, and the bad
#                 requests: invalid JSON (400), a field breaking a rule (400), a body over
#                 BODY_LIMIT (413), an unknown route (404); WebSocket: queries, pings,
#                 non-JSON messages (error, socket stays open), reconnects
#   agentd llm    AGENT=llm against fake-llm: POST /agent (ANALYSIS, the tokens,
#                 PERFORMANCE, done), GET /health
# Two agentd processes because one process serves one agent; each is sampled.
# Load: wrk with scripts/soak/mix.lua (each response checked against its request kind),
# scripts/soak/ws_load.py for the WebSockets; paced (a think time per connection), so
# the run leaves the machine's other work room and measures a steady state, not a peak.
#
# Judged by scripts/soak/report.py: the least-squares RSS slope over the second half of
# the run (MiB/min, limit --max-slope) and the unexpected errors (any answer other than
# the request kind's expected one, socket errors, WebSocket failures, WARN/ERROR lines in
# agentd's logs, an agentd that exits or does not exit 0 on SIGTERM).
#
# Output: bench-out/soak-<time>/ (rss.csv, the load tools' output, agentd's logs,
# soak-rss.svg, SOAK.md); bench-out/soak-latest points at it. A full run (not --quick)
# also writes benches/soak-rss.svg and benches/SOAK.md.
#
# Usage: scripts/soak.sh [SECONDS] [options]     (SECONDS default 600)
#   --quick            30 s, for CI: bench-out/ only, and a looser slope limit: a 15 s
#                      half cannot resolve a slow leak, and one allocator step (a new
#                      mimalloc segment, ~2 MiB) in it reads as ~8 MiB/min; 16 MiB/min
#                      (4 MiB in the half) still catches a leak of a few hundred bytes
#                      per request at the echo mix's ~800 requests/s
#   --max-slope X      RSS slope limit in MiB/min (default 0.5; --quick: 16)
#   --no-build         use the binaries already built
#   -h, --help         this text
#
# Run the full soak on a quiet machine: it checks `uptime` first and warns when the load
# average is above 0.5 per CPU. Exit status: 0 passed, 1 growth or unexpected errors,
# 2 usage or set-up failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/scripts/soak

DURATION=600
QUICK=0
MAX_SLOPE=''
BUILD=1
WORKERS=2
ECHO_CONNECTIONS=8
ECHO_THINK_MS=10
LLM_CONNECTIONS=8
LLM_THINK_MS=20
LLM_TOKENS=20
LLM_TOKEN_DELAY_MS=5
WS_SOCKETS=4
WS_THINK_MS=50

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "soak: $*" >&2; exit 2; }
log() { echo "soak: $*" >&2; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) QUICK=1; DURATION=30; shift ;;
    --max-slope) MAX_SLOPE=${2:?}; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) usage; exit 0 ;;
    [0-9]*) DURATION=$1; shift ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 10 ]] || die "SECONDS must be a whole number, 10 or more"
[[ -n $MAX_SLOPE ]] || { [[ $QUICK == 1 ]] && MAX_SLOPE=16 || MAX_SLOPE=0.5; }
for tool in wrk python3 curl cargo; do
  command -v "$tool" >/dev/null || die "$tool not found (wrk: apt-get install -y wrk)"
done

NPROC=$(nproc)
LOADAVG=$(cut -d' ' -f1 /proc/loadavg)
log "$(uptime)"
if python3 -c "import sys; sys.exit(0 if float('$LOADAVG') > 0.5 * $NPROC else 1)"; then
  log "warning: load average $LOADAVG on $NPROC CPU(s): the machine is busy; RSS is unaffected, latency and CPU figures are"
fi

# shellcheck source=lib/release_run.sh
source "$ROOT/scripts/lib/release_run.sh"
release_run soak "$BUILD"

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# Every process binds port 0 and says which port it got: no race for a "free" port with
# the other work on the machine.
wait_port() {  # name pid file regex: prints the port once the line appears
  local t port
  for t in $(seq 100); do
    port=$(grep -oE "$4" "$3" 2>/dev/null | head -1 | grep -oE '[0-9]+$' || true)
    [[ -n $port ]] && { echo "$port"; return 0; }
    kill -0 "$2" 2>/dev/null || die "$1 exited during start-up: $(tail -5 "$3")"
    sleep 0.1
  done
  die "$1 did not start within 10 s: $(tail -5 "$3")"
}

wait_live() {  # name pid port
  local t
  for t in $(seq 100); do
    kill -0 "$2" 2>/dev/null || die "$1 exited during start-up (log: $RUN/agentd-$1.log)"
    curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$3/health/live" && return 0
    sleep 0.1
  done
  die "$1 did not answer GET /health/live within 10 s"
}

"$RUN/fake-llm" --port 0 --tokens "$LLM_TOKENS" --token-delay-ms "$LLM_TOKEN_DELAY_MS" \
  > "$RUN/fake-llm.out" 2>&1 &
FAKE_PID=$!; PIDS+=("$FAKE_PID")
FAKE_PORT=$(wait_port fake-llm "$FAKE_PID" "$RUN/fake-llm.out" '^listening on http://127\.0\.0\.1:[0-9]+')

common=(HOST=127.0.0.1 WORKERS=$WORKERS NODE_ENV=production LOG_LEVEL=info)
env "${common[@]}" PORT=0 AGENT=echo BODY_LIMIT=4096 \
  "$RUN/agentd" > /dev/null 2> "$RUN/agentd-echo.log" &
ECHO_PID=$!; PIDS+=("$ECHO_PID")
env "${common[@]}" PORT=0 AGENT=llm OPENAI_API_KEY=sk-soak \
  OPENAI_BASE_URL="http://127.0.0.1:$FAKE_PORT/v1" OPENAI_MODEL=fake-gpt \
  "$RUN/agentd" > /dev/null 2> "$RUN/agentd-llm.log" &
LLM_PID=$!; PIDS+=("$LLM_PID")
listening='"agentd listening","addr":"127\.0\.0\.1:[0-9]+'
ECHO_PORT=$(wait_port "agentd echo" "$ECHO_PID" "$RUN/agentd-echo.log" "$listening")
LLM_PORT=$(wait_port "agentd llm" "$LLM_PID" "$RUN/agentd-llm.log" "$listening")
wait_live echo "$ECHO_PID" "$ECHO_PORT"
wait_live llm "$LLM_PID" "$LLM_PORT"

STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
log "soaking for ${DURATION}s: echo on :$ECHO_PORT (PID $ECHO_PID), llm on :$LLM_PORT (PID $LLM_PID), fake-llm on :$FAKE_PORT"
python3 "$HERE/sample.py" --out "$RUN/rss.csv" --duration "$DURATION" \
  echo="$ECHO_PID" llm="$LLM_PID" 2> "$RUN/sample.err" &
SAMPLER=$!; PIDS+=("$SAMPLER")
SOAK_MIX=echo SOAK_DELAY=$ECHO_THINK_MS wrk -t1 -c"$ECHO_CONNECTIONS" -d"${DURATION}s" --timeout 10s \
  -s "$HERE/mix.lua" "http://127.0.0.1:$ECHO_PORT" > "$RUN/wrk-echo.out" 2>&1 &
WRK_ECHO=$!; PIDS+=("$WRK_ECHO")
SOAK_MIX=llm SOAK_DELAY=$LLM_THINK_MS wrk -t1 -c"$LLM_CONNECTIONS" -d"${DURATION}s" --timeout 10s \
  -s "$HERE/mix.lua" "http://127.0.0.1:$LLM_PORT" > "$RUN/wrk-llm.out" 2>&1 &
WRK_LLM=$!; PIDS+=("$WRK_LLM")
python3 "$HERE/ws_load.py" --port "$ECHO_PORT" --sockets "$WS_SOCKETS" --duration "$DURATION" \
  --think-ms "$WS_THINK_MS" > "$RUN/ws.out" 2>&1 &
WS_LOAD=$!; PIDS+=("$WS_LOAD")

wait "$WRK_ECHO" "$WRK_LLM" "$WS_LOAD" || true
wait "$SAMPLER" || log "sampler: $(cat "$RUN/sample.err")"

# Every agentd must still be there, then exit 0 on SIGTERM within its shutdown timeout.
died='{}'
for pair in echo:$ECHO_PID llm:$LLM_PID; do
  name=${pair%%:*} pid=${pair#*:}
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" && status=0 || status=$?
    died=$(python3 -c "import json,sys; d=json.loads(sys.argv[1]); d[sys.argv[2]]='exited during the run, status '+sys.argv[3]; print(json.dumps(d))" "$died" "$name" "$status")
    continue
  fi
  kill -TERM "$pid"
  wait "$pid" && status=0 || status=$?
  if [[ $status != 0 ]]; then
    died=$(python3 -c "import json,sys; d=json.loads(sys.argv[1]); d[sys.argv[2]]='exit status '+sys.argv[3]+' on SIGTERM'; print(json.dumps(d))" "$died" "$name" "$status")
  fi
done
kill "$FAKE_PID" 2>/dev/null || true
wait "$FAKE_PID" 2>/dev/null || true
PIDS=()

if [[ $QUICK == 1 ]]; then command="scripts/soak.sh --quick"; else command="scripts/soak.sh $DURATION"; fi
python3 - "$RUN/meta.json" <<EOF
import json, subprocess, sys
def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd="$ROOT").stdout.strip()
    except OSError:
        return ""
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
meta = {
    "date": "$STARTED", "commit": sh("git", "rev-parse", "--short", "HEAD")
    + (" (with uncommitted changes)" if sh("git", "status", "--porcelain", "--untracked-files=no") else ""),
    "duration_s": $DURATION, "nproc": $NPROC, "cpu_model": cpu, "loadavg_before": "$LOADAVG",
    "workers": $WORKERS, "echo_connections": $ECHO_CONNECTIONS, "echo_think_ms": $ECHO_THINK_MS,
    "llm_connections": $LLM_CONNECTIONS, "llm_think_ms": $LLM_THINK_MS, "llm_tokens": $LLM_TOKENS,
    "llm_token_delay_ms": $LLM_TOKEN_DELAY_MS, "ws_sockets": $WS_SOCKETS, "ws_think_ms": $WS_THINK_MS,
    "command": "$command", "died": json.loads('$died'),
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF

report=(python3 "$HERE/report.py" --run "$RUN" --max-slope "$MAX_SLOPE")
if [[ $QUICK == 0 ]]; then
  report+=(--svg "$ROOT/benches/soak-rss.svg" --md "$ROOT/benches/SOAK.md")
fi
if "${report[@]}"; then
  log "passed (run: $RUN)"
else
  log "FAILED (run: $RUN)"
  exit 1
fi

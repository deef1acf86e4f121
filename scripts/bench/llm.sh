#!/usr/bin/env bash
# scripts/bench/llm.sh: the LLM path at production scale. agentd's LLM agent (AGENT=llm)
# against a relay ceiling and the LLM gateways a team would pick instead, all in front of
# the same fake upstream (tests/fake_llm, the `fake-llm` binary), in one run.
#
# Servers (each started fresh for every measurement, on 127.0.0.1 only, one core each):
#   upstream       the fake upstream called directly (OpenAI chunk SSE): the baseline
#   relay-ceiling  benches/peers/relay-ceiling: the smallest honest hyper relay, upstream
#                  SSE re-framed as Sentient events through a pooled client (WORKERS=1)
#   agentd         the release build, AGENT=llm (OPENAI_BASE_URL = the fake), WORKERS=1,
#                  defaults otherwise (llm-10k: LLM_CONCURRENT_REQUESTS=10000, the cap)
#   agentd-openai  the same agentd process settings, asked on its OpenAI-compatible front
#                  door (POST /v1/chat/completions, "stream":true; openai-relay only)
#   litellm        the LiteLLM proxy (PyPI, pinned in benches/peers/litellm, one worker)
#   portkey        Portkey's gateway (npm, pinned in benches/peers/portkey, one process)
# agentd and the ceiling are asked POST /agent (Sentient SSE back); the upstream, the
# gateways and agentd-openai POST /v1/chat/completions with "stream":true (OpenAI chunks
# back).
#
# Scenarios:
#   llm-relay    closed loop, 50 connections, 20-token answers with no delay: answers/s,
#                CPU µs per answer and per token, p50/p99, peak RSS
#   llm-latency  open loop at fixed rates (--rates), 20 ms to the first token, 20 tokens
#                5 ms apart: time to first token and total time, p50/p99/p99.9, and what
#                each server adds to the upstream called directly at the same rate. A
#                server that did not hold a rate (errors, or p99 total over 1 s) is not
#                asked the higher ones
#   llm-10k      --streams (10,000) concurrent slow answers (--stream-tokens 5 tokens
#                --stream-delay-ms 2000 ms apart), held at once by as many closed-loop
#                clients (started over --stream-ramp 10 s): RSS per active stream, CPU per
#                relayed token. A relay holds two sockets per stream: where the open-file
#                limit cannot be raised to 2 x streams + 2048, as many streams as fit
#                (a warning says so, and the report names the number)
#   openai-relay llm-relay's load (closed loop, 50 connections, 20-token answers, no delay)
#                on the OpenAI-compatible route of each: agentd-openai (agentd's
#                /v1/chat/completions), litellm, portkey, and agentd on /agent beside
#                them (the same agent, its own protocol): answers/s, CPU µs per answer,
#                p50/p99, every answer checked complete (200, all 20 tokens, [DONE])
#
# Method (as scripts/bench.sh): for each repetition, scenario (and rate), each server in
# turn: start the fake upstream and the server, warm up, then one run of the load
# generator (benches/loadgen: open or closed loop, times the first token and the end of
# every answer from its due time, checks every answer complete: status 200, all its
# tokens, the end marker) while scripts/bench/measure.py samples the server's CPU
# (/proc utime+stime) and RSS, and the upstream's CPU apart. Medians of repetitions.
# Pinning (taskset): the server on the first CPU; the fake upstream on the second; the
# load generator on the rest (on 2 CPUs the fake upstream and the load generator share
# the second CPU).
#
# Output: progress on stderr; raw.jsonl, summary.md, summary.json, llm.svg under
# bench-out/<time>-llm/; without --no-results (and not --quick) the LLM section of
# benches/RESULTS.md and benches/llm.svg are rewritten.
#
# Needs: cargo, python3 (the LiteLLM venv: .venv-litellm, made on first use), node >= 20
# and npm (Portkey: npm ci in benches/peers/portkey), taskset. A gateway that cannot be
# installed is skipped with a warning.
#
# Usage: scripts/bench/llm.sh [options]
#   --scenario REGEX   llm-relay|llm-latency|llm-10k|openai-relay subset (egrep, anchored;
#                      default all)
#   --servers LIST     comma-separated subset of
#                      upstream,relay-ceiling,agentd,agentd-openai,litellm,portkey
#   --duration S       seconds per measured run (default 10)
#   --reps N           repetitions (default 3)
#   --warmup S         warm-up seconds before each measured run (default 2)
#   --rates "R ..."    llm-latency's rates, answers/s (default "10 100 1000")
#   --streams N        llm-10k's concurrent streams (default 10000)
#   --stream-tokens N  llm-10k's tokens per answer (default 5)
#   --stream-delay-ms D  llm-10k's delay between tokens (default 2000)
#   --stream-ramp S    llm-10k's clients start over S seconds (default 10)
#   --no-build         use the binaries already built
#   --no-results       leave benches/RESULTS.md and benches/llm.svg alone
#   --quick            smoke run: 1 rep x 2 s, 1 s warm-up, rates "100 1000", 1,000 streams
#                      of 10 tokens; the gateways in llm-relay only (enough to check that
#                      they start and answer), LiteLLM only if its venv is already installed
#   -h, --help         this text
# Exit status: non-zero when a build or a server start fails, agentd dies, or agentd has
# errors in llm-relay (elsewhere overload may make it shed: reported, not fatal). Peers'
# errors are reported, not fatal.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HELPERS=$ROOT/scripts/bench
RELAY_DIR=$ROOT/benches/peers/relay-ceiling
LITELLM_DIR=$ROOT/benches/peers/litellm
PORTKEY_DIR=$ROOT/benches/peers/portkey
LITELLM_VENV=$ROOT/.venv-litellm
AGENT_BODY=$HELPERS/agent-body.json
OPENAI_BODY=$HELPERS/llm-body.json

SCENARIO_RE='.*'
SERVERS='upstream,relay-ceiling,agentd,agentd-openai,litellm,portkey'
DURATION=10
REPS=3
WARMUP=2
RATES='10 100 1000'
STREAMS=10000
STREAM_TOKENS=5
STREAM_DELAY_MS=2000
STREAM_RAMP=10
BUILD=1
RESULTS=1
QUICK=0
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
PORT_BASE=$(( ${BENCH_PORT_BASE:-$(( EPHEMERAL_LOW - 2000 ))} + 100 ))
ORIG_ARGS=$(python3 -c 'import shlex, sys; print(shlex.join(sys.argv[1:]))' "$@" 2>/dev/null || echo "$*")

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "bench-llm: $*" >&2; exit 1; }
log() { echo "bench-llm: $*" >&2; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --scenario) SCENARIO_RE=$2; shift 2 ;;
    --servers) SERVERS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --rates) RATES=$2; shift 2 ;;
    --streams) STREAMS=$2; shift 2 ;;
    --stream-tokens) STREAM_TOKENS=$2; shift 2 ;;
    --stream-delay-ms) STREAM_DELAY_MS=$2; shift 2 ;;
    --stream-ramp) STREAM_RAMP=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --no-results) RESULTS=0; shift ;;
    --quick) QUICK=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done
if [[ $QUICK == 1 ]]; then
  DURATION=2; REPS=1; WARMUP=1; RATES='100 1000'; STREAMS=1000; STREAM_TOKENS=10; STREAM_DELAY_MS=100
  STREAM_RAMP=1; RESULTS=0
fi
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 1 ]] || die "--duration wants whole seconds >= 1"
[[ $REPS =~ ^[0-9]+$ && $REPS -ge 1 ]] || die "--reps wants an integer >= 1"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "--warmup wants whole seconds"
[[ $STREAMS =~ ^[0-9]+$ && $STREAMS -ge 1 ]] || die "--streams wants an integer >= 1"

SCENARIOS=()
for s in llm-relay llm-latency llm-10k openai-relay; do
  [[ $s =~ ^($SCENARIO_RE)$ ]] && SCENARIOS+=("$s")
done
[[ ${#SCENARIOS[@]} -gt 0 ]] || die "no scenario matches '$SCENARIO_RE'"
IFS=, read -r -a SERVER_LIST <<< "$SERVERS"
for s in "${SERVER_LIST[@]}"; do
  case $s in upstream|relay-ceiling|agentd|agentd-openai|litellm|portkey) ;; *) die "unknown server: $s" ;; esac
done
has_server() { [[ ",$SERVERS," == *",$1,"* ]]; }
drop_server() { # name why
  log "WARNING: skipping $1: $2"
  local kept=() s
  for s in "${SERVER_LIST[@]}"; do [[ $s == "$1" ]] || kept+=("$s"); done
  SERVER_LIST=("${kept[@]}")
  SERVERS=$(IFS=,; echo "${SERVER_LIST[*]}")
}

# --------------------------------------------------------------------------- CPUs
mapfile -t ONLINE < <(taskset -cp $$ | sed 's/.*: //' | tr ',' '\n' | awk -F- '{ if (NF==2) for (i=$1;i<=$2;i++) print i; else print $1 }')
if [[ ${#ONLINE[@]} -ge 3 ]]; then
  SERVER_PIN=(taskset -c "${ONLINE[0]}"); FAKE_PIN=(taskset -c "${ONLINE[1]}")
  CLIENT_PIN=(taskset -c "$(IFS=,; echo "${ONLINE[*]:2}")")
  LAYOUT="server CPU ${ONLINE[0]}, fake upstream CPU ${ONLINE[1]}, load generator CPU(s) $(IFS=,; echo "${ONLINE[*]:2}")"
elif [[ ${#ONLINE[@]} == 2 ]]; then
  SERVER_PIN=(taskset -c "${ONLINE[0]}"); FAKE_PIN=(taskset -c "${ONLINE[1]}"); CLIENT_PIN=(taskset -c "${ONLINE[1]}")
  LAYOUT="server CPU ${ONLINE[0]}, fake upstream and load generator sharing CPU ${ONLINE[1]}"
else
  SERVER_PIN=(); FAKE_PIN=(); CLIENT_PIN=()
  LAYOUT="one CPU: no pinning"
fi

# Sockets: every stream is a connection to the server and one from it to the upstream.
want_fds=$(( 2 * STREAMS + 2048 ))
if [[ $(ulimit -n) != unlimited && $(ulimit -n) -lt $want_fds ]]; then
  ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
# A relay holds two sockets per stream: where the open-file limit cannot be raised that
# far (an unprivileged container's hard limit), llm-10k asks as many streams as fit.
STREAMS_ASKED=$STREAMS
if [[ $(ulimit -n) != unlimited && $(ulimit -n) -lt $want_fds ]]; then
  STREAMS=$(( ($(ulimit -n) - 2048) / 2 ))
  if [[ " ${SCENARIOS[*]} " == *" llm-10k "* ]]; then
    log "WARNING: the open-file limit is $(ulimit -n) (hard $(ulimit -Hn)): llm-10k holds $STREAMS streams, not $STREAMS_ASKED"
  fi
fi

# ------------------------------------------------------------------------- set-up
# shellcheck source=../lib/target_dir.sh
source "$ROOT/scripts/lib/target_dir.sh"
# shellcheck source=../lib/venv.sh
source "$ROOT/scripts/lib/venv.sh"
if [[ $BUILD == 1 ]]; then
  log "building agentd, fake-llm, loadgen (cargo build --release)"
  (cd "$ROOT" && cargo build --release --bin agentd && cargo build --release -p fake-llm -p loadgen) || die "build failed"
  if has_server relay-ceiling; then
    log "building relay-ceiling (cargo build --release)"
    (cd "$RELAY_DIR" && cargo build --release --locked) || die "relay-ceiling build failed"
  fi
fi
TARGET=$(cargo_target_dir "$ROOT")/release
for b in fake-llm loadgen $( (has_server agentd || has_server agentd-openai) && echo agentd); do [[ -x $TARGET/$b ]] || die "$TARGET/$b not built"; done
RELAY_BIN=$(cargo_target_dir "$RELAY_DIR")/release/relay-ceiling
if has_server relay-ceiling; then [[ -x $RELAY_BIN ]] || die "$RELAY_BIN not built"; fi

if has_server portkey; then
  if ! { command -v node >/dev/null && command -v npm >/dev/null &&
         [[ $(node -p 'process.versions.node.split(".")[0]') -ge 20 ]]; }; then
    drop_server portkey "node >= 20 and npm are needed"
  elif [[ ! -f $PORTKEY_DIR/node_modules/.package-lock.json ||
          $PORTKEY_DIR/package-lock.json -nt $PORTKEY_DIR/node_modules/.package-lock.json ]]; then
    log "installing the Portkey gateway (npm ci)"
    (cd "$PORTKEY_DIR" && npm ci --no-audit --no-fund --loglevel=error) || drop_server portkey "npm ci failed"
  fi
fi
if has_server litellm; then
  if [[ $QUICK == 1 && ! -x $LITELLM_VENV/bin/litellm ]]; then
    drop_server litellm "--quick does not install it (a minute or more); a full run does, or: python3 -m venv .venv-litellm && .venv-litellm/bin/pip install -r benches/peers/litellm/requirements.txt"
  elif ! ensure_venv "$LITELLM_VENV" "$LITELLM_DIR/requirements.txt" 3.9; then
    drop_server litellm "its venv could not be made"
  fi
fi
[[ ${#SERVER_LIST[@]} -gt 0 ]] || die "no server left to run"

STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=$ROOT/bench-out/$STAMP-llm
[[ $QUICK == 1 ]] && OUT=$OUT-quick
LOGS=$OUT/logs
mkdir -p "$LOGS" "$OUT/bin"
RAW=$OUT/raw.jsonl
: > "$RAW"
# Measure copies of the binaries, so that a rebuild during the run changes nothing.
cp "$TARGET/fake-llm" "$TARGET/loadgen" "$OUT/bin/"
{ has_server agentd || has_server agentd-openai; } && cp "$TARGET/agentd" "$OUT/bin/"
has_server relay-ceiling && cp "$RELAY_BIN" "$OUT/bin/"
BIN=$OUT/bin

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ $COMMIT != unknown && -n $(GIT_OPTIONAL_LOCKS=0 git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
  COMMIT=$COMMIT-dirty
fi
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
python3 - "$OUT/meta.json" <<EOF
import json, platform, sys
mem_kib = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal:"))
json.dump({"date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "commit": "$COMMIT", "nproc": $(nproc),
           "cpu_model": """$CPU_MODEL""", "kernel": platform.release(), "mem_gib": round(mem_kib / 2**20, 1),
           "node": "$(node -v 2>/dev/null || echo none)", "rustc": "$(rustc -V 2>/dev/null | awk '{ print $2 }')",
           "duration_s": $DURATION, "reps": $REPS, "warmup_s": $WARMUP, "rates": "$RATES".split(),
           "streams": $STREAMS, "streams_asked": $STREAMS_ASKED, "stream_tokens": $STREAM_TOKENS, "stream_delay_ms": $STREAM_DELAY_MS, "layout": "$LAYOUT",
           "servers": "$SERVERS".split(","), "quick": $([[ $QUICK == 1 ]] && echo True || echo False),
           "command": ("scripts/bench/llm.sh " + """$ORIG_ARGS""").strip()}, open(sys.argv[1], "w"), indent=2)
EOF

# ------------------------------------------------------------------------ processes
FAKE_PORT=$PORT_BASE
# LiteLLM refuses to start without a master key; clients then send it as a bearer token.
LITELLM_KEY=sk-bench-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
declare -A PORT=([relay-ceiling]=$(( PORT_BASE + 1 )) [agentd]=$(( PORT_BASE + 2 ))
                 [litellm]=$(( PORT_BASE + 3 )) [portkey]=$(( PORT_BASE + 4 ))
                 [agentd-openai]=$(( PORT_BASE + 5 )))
FAKE_PID=''
SERVER_PID=''
descendants() {
  local p c
  for p in "$@"; do
    for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do echo "$c"; descendants "$c"; done
  done
}
stop_pid() { # pid
  local pid=$1 kids
  [[ -n $pid ]] || return 0
  kids=$(descendants "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
}
stop_server() { stop_pid "$SERVER_PID"; SERVER_PID=''; }
stop_fake() { stop_pid "$FAKE_PID"; FAKE_PID=''; }
cleanup() { local rc=$?; stop_server; stop_fake; exit $rc; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_fake() { # fake-llm flags...
  port_free "$FAKE_PORT" || die "port $FAKE_PORT is already in use (set BENCH_PORT_BASE)"
  "${FAKE_PIN[@]}" "$BIN/fake-llm" --port "$FAKE_PORT" --threads 1 "$@" >> "$LOGS/fake-llm.log" 2>&1 &
  FAKE_PID=$!
  for _ in $(seq 100); do
    grep -q "listening on http://127.0.0.1:$FAKE_PORT" "$LOGS/fake-llm.log" 2>/dev/null &&
      ! port_free "$FAKE_PORT" && return 0
    kill -0 "$FAKE_PID" 2>/dev/null || die "fake-llm exited (log: $LOGS/fake-llm.log)"
    sleep 0.05
  done
  die "fake-llm did not start"
}

start_server() { # name scenario
  local name=$1 port=${PORT[$1]:-} log=$LOGS/$1.log health
  [[ $name == upstream ]] && { SERVER_PID=$FAKE_PID; return 0; }
  port_free "$port" || die "port $port is already in use (set BENCH_PORT_BASE)"
  echo "=== start $(date -u +%T) $2" >> "$log"
  case $name in
    relay-ceiling)
      health=/health/live
      PORT=$port HOST=127.0.0.1 WORKERS=1 UPSTREAM_URL=http://127.0.0.1:$FAKE_PORT/v1/chat/completions \
        "${SERVER_PIN[@]}" "$BIN/relay-ceiling" >> "$log" 2>&1 & ;;
    agentd|agentd-openai)
      health=/health/live
      local cap=()
      [[ $2 == llm-10k ]] && cap=(LLM_CONCURRENT_REQUESTS=10000)
      env NODE_ENV=production PORT="$port" HOST=127.0.0.1 WORKERS=1 AGENT=llm \
        OPENAI_API_KEY=bench OPENAI_BASE_URL="http://127.0.0.1:$FAKE_PORT/v1" OPENAI_MODEL=fake-model \
        "${cap[@]}" "${SERVER_PIN[@]}" "$BIN/agentd" >> "$log" 2>&1 & ;;
    litellm)
      health=/health/liveliness
      (cd "$LITELLM_DIR" && exec env FAKE_LLM_BASE_URL="http://127.0.0.1:$FAKE_PORT/v1" \
        LITELLM_MASTER_KEY="$LITELLM_KEY" LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False LITELLM_LOG=ERROR \
        "${SERVER_PIN[@]}" "$LITELLM_VENV/bin/litellm" --config config.yaml --host 127.0.0.1 \
        --port "$port" --num_workers 1) >> "$log" 2>&1 & ;;
    portkey)
      health=/
      (cd "$PORTKEY_DIR" && exec env NODE_ENV=production HOST=127.0.0.1 "${SERVER_PIN[@]}" \
        node --import ./preload.mjs node_modules/@portkey-ai/gateway/build/start-server.js \
        --headless --port="$port") >> "$log" 2>&1 & ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 1200); do
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$log" >&2; SERVER_PID=''; die "$name exited during start-up (log: $log)"; }
    curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$port$health" && return 0
    sleep 0.1
  done
  tail -20 "$log" >&2
  die "$name did not answer GET $health within 120 s (log: $log)"
}

# The load generator's arguments for one server: URL, body, headers, format.
target_args() { # name
  case $1 in
    upstream) echo "--url http://127.0.0.1:$FAKE_PORT/v1/chat/completions --body $OPENAI_BODY --format openai" ;;
    relay-ceiling|agentd) echo "--url http://127.0.0.1:${PORT[$1]}/agent --body $AGENT_BODY --format sentient" ;;
    agentd-openai) echo "--url http://127.0.0.1:${PORT[$1]}/v1/chat/completions --body $OPENAI_BODY --format openai" ;;
    litellm) echo "--url http://127.0.0.1:${PORT[$1]}/v1/chat/completions --body $OPENAI_BODY --format openai" ;;
    portkey) echo "--url http://127.0.0.1:${PORT[$1]}/v1/chat/completions --body $OPENAI_BODY --format openai" ;;
  esac
}
target_headers() { # name: one header per line
  case $1 in
    upstream) echo "authorization: Bearer bench" ;;
    litellm) echo "authorization: Bearer $LITELLM_KEY" ;;
    portkey) printf '%s\n' "authorization: Bearer bench" "x-portkey-provider: openai" \
               "x-portkey-custom-host: http://127.0.0.1:$FAKE_PORT/v1" ;;
  esac
}

# One measured run: measure.py around the load generator. Prints nothing; appends the record.
FAILED=0
measure() { # scenario server rep rate loadgen-args...
  local scen=$1 server=$2 rep=$3 rate=$4; shift 4
  local args hdrs=() up=() h
  read -r -a args <<< "$(target_args "$server")"
  while IFS= read -r h; do [[ -n $h ]] && hdrs+=(--header "$h"); done < <(target_headers "$server")
  [[ $server != upstream ]] && up=(--upstream-pid "$FAKE_PID")
  if [[ $WARMUP -gt 0 ]]; then
    # The same load, but at most 50 connections: llm-10k's RSS is measured from what the
    # server holds before the run, which a 10,000-stream warm-up would have grown.
    local warm=("$@") i
    for (( i = 0; i < ${#warm[@]} - 1; i++ )); do
      [[ ${warm[i]} == --connections && ${warm[i+1]} -gt 50 ]] && warm[i+1]=50
    done
    "${CLIENT_PIN[@]}" "$BIN/loadgen" "${args[@]}" "${hdrs[@]}" "${warm[@]}" --duration "$WARMUP" --timeout 10 \
      >> "$LOGS/warmup.log" 2>&1 || true
  fi
  local rc=0
  python3 "$HELPERS/measure.py" --pid "$SERVER_PID" "${up[@]}" --log "$LOGS/load.log" \
    --meta "scenario=$scen" --meta "server=$server" --meta "rep=$rep" --meta "rate=$rate" -- \
    "${CLIENT_PIN[@]}" "$BIN/loadgen" "${args[@]}" "${hdrs[@]}" "$@" > "$OUT/last.json" || rc=$?
  cat "$OUT/last.json" >> "$RAW"
  # agentd must answer every request where nothing is overloaded (llm-relay), and survive
  # everywhere; beyond what the machine holds it sheds (503 `saturated`, `under_pressure`),
  # which the tables report.
  if [[ $server == agentd* ]] && ! python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).read() or "{}")
ok = r and r.get("server_alive", True) and (sys.argv[2] not in ("llm-relay", "openai-relay") or not r.get("errors"))
sys.exit(0 if ok else 1)' "$OUT/last.json" "$scen"; then
    FAILED=1; log "agentd had errors or died in this run (exit $rc)"
  fi
}

# Did the last run hold its rate? (no errors, p99 total under 1 s)
held() {
  python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).read() or "{}")
sys.exit(0 if r and not r.get("errors") and r.get("p99_us", 1e9) < 1e6 else 1)' "$OUT/last.json"
}

# ------------------------------------------------------------------------ the run
log "run $OUT"
log "servers: $SERVERS; scenarios: ${SCENARIOS[*]}; $REPS rep(s) x ${DURATION}s, warm-up ${WARMUP}s"
log "pinning: $LAYOUT"
for rep in $(seq "$REPS"); do
  for scen in "${SCENARIOS[@]}"; do
    case $scen in
      llm-relay) fake=(--tokens 20); rates=(0) ;;
      llm-latency) fake=(--tokens 20 --ttft-ms 20 --token-delay-ms 5); read -r -a rates <<< "$RATES" ;;
      llm-10k) fake=(--tokens "$STREAM_TOKENS" --token-delay-ms "$STREAM_DELAY_MS"); rates=(0) ;;
      openai-relay) fake=(--tokens 20); rates=(0) ;;
    esac
    declare -A GAVE_UP=()
    for rate in "${rates[@]}"; do
      for server in "${SERVER_LIST[@]}"; do
        if [[ $QUICK == 1 && $scen != llm-relay && ( $server == litellm || $server == portkey ) ]]; then
          continue
        fi
        # agentd-openai is measured in openai-relay only; openai-relay asks the servers
        # that have an OpenAI-compatible route, and agentd's /agent beside them.
        if [[ $scen == openai-relay ]]; then
          [[ $server == agentd || $server == agentd-openai || $server == litellm || $server == portkey ]] || continue
        elif [[ $server == agentd-openai ]]; then
          continue
        fi
        if [[ -n ${GAVE_UP[$server]:-} ]]; then
          log "rep $rep  $scen  $server  at $rate/s: skipped (did not hold ${GAVE_UP[$server]}/s)"
          continue
        fi
        log "rep $rep/$REPS  $scen  $server$([[ $rate != 0 ]] && echo "  $rate answers/s")"
        start_fake "${fake[@]}"
        start_server "$server" "$scen"
        case $scen in
          llm-relay|openai-relay)
            measure "$scen" "$server" "$rep" 0 --tokens 20 --connections 50 --duration "$DURATION" --timeout 30 ;;
          llm-latency)
            measure "$scen" "$server" "$rep" "$rate" --tokens 20 --rate "$rate" --duration "$DURATION" \
              --timeout "$(( QUICK == 1 ? 5 : 10 ))"
            held || GAVE_UP[$server]=$rate ;;
          llm-10k)
            measure "$scen" "$server" "$rep" 0 --tokens "$STREAM_TOKENS" --connections "$STREAMS" \
              --ramp "$(( STREAM_RAMP < DURATION ? STREAM_RAMP : (DURATION + 1) / 2 ))" --duration "$DURATION" \
              --timeout "$(( QUICK == 1 ? 10 : 30 ))" ;;
        esac
        stop_server
        stop_fake
      done
    done
    unset GAVE_UP
  done
done

report=(python3 "$HELPERS/llm-report.py" --raw "$RAW" --meta "$OUT/meta.json" --out "$OUT" --svg "$OUT/llm.svg")
[[ $RESULTS == 1 ]] && report+=(--results-md "$ROOT/benches/RESULTS.md" --results-svg "$ROOT/benches/llm.svg")
"${report[@]}"
log "raw results: $OUT"
[[ $FAILED == 0 ]] || die "agentd failed or had errors in at least one run (see $LOGS)"

#!/usr/bin/env bash
# scripts/bench.sh: agentd against its peers, on this machine, in one run.
#
# Servers (each started fresh for every measurement, on 127.0.0.1 only):
#   agentd           the release build (cargo build --release; CARGO_TARGET_DIR honoured), WORKERS = server cores
#   hyper-ceiling    benches/peers/hyper-ceiling: the smallest honest hyper server, fixed
#                    responses; the upper bound for any hyper-based server
#   fastify          benches/peers/fastify: the Fastify guide's server, one Node process,
#                    without the guide's plugins (the fastest honest version)
#   fastify-full     the same with FULL=1, one Node process: the feature-equal peer, with
#                    the guide's helmet, cors, under-pressure and fastify-metrics plugins
#                    and its X-Response-Time hooks, i.e. the work agentd does on every
#                    response (security headers, CORS, load-shedding checks, metrics);
#                    only in the health-* and agent-* scenarios (agent-50 alone with
#                    --quick). The tables give agentd's ratio to it next to its ratio to
#                    fastify: the first compares like with like, the second agentd with
#                    the least a Fastify server can do
#   fastify-cluster  fastify (no plugins) under Node's cluster, one worker per server core
#
# Scenarios:
#   health-50, health-256  GET /health, keep-alive, 50 / 256 connections (wrk)
#   agent-50, agent-256    POST /agent with a valid body (scripts/bench/agent-body.json),
#                          the echo agent's 3 SSE events back, keep-alive (wrk)
#   agent-close            POST /agent, a new connection per request (Connection: close)
#   openai-50              agentd only: POST /v1/chat/completions with "stream":true
#                          (scripts/bench/llm-body.json, the same prompt), the echo agent's
#                          answer as OpenAI chunks, keep-alive (wrk); beside agent-50, the
#                          cost of the OpenAI front door over /agent on the same agent
#   sse-10k                10,000 concurrent streaming clients (scripts/bench/hold.py):
#                          each opens a connection and completes one POST /agent stream,
#                          all 10,000 connections are then held open together for the
#                          run's duration (peak RSS and RSS per held connection are
#                          sampled), then all 10,000 send their next request at once.
#                          The echo agent completes a stream at once, so no client can
#                          hold 10,000 echo streams open mid-response; what a server pays
#                          for 10,000 streaming clients is the held connections plus
#                          10,000 simultaneous streams, and that is what this measures.
#   llm                    agentd's overhead on the LLM path: `cargo bench --bench
#                          llm_overhead` streams the same answers from a local fake
#                          upstream (20 tokens, 20 ms to the first, 5 ms apart) straight
#                          and through agentd's LLM agent at 100 and 1,000 req/s (open loop), and
#                          reports time to first token and total latency, p50/p99, and
#                          the difference (in-process servers; not interleaved)
#   llm-relay, llm-latency, llm-10k, openai-relay
#                          the LLM path against a relay ceiling, LiteLLM and Portkey, all in
#                          front of the fake upstream (closed loop 50 connections; open loop
#                          at fixed rates, added time to first token; 10,000 held slow
#                          answers; agentd's /v1/chat/completions against the gateways' at
#                          llm-relay's load): run by scripts/bench/llm.sh (see its header), after the
#                          other scenarios, with this run's --duration/--reps/--warmup,
#                          --quick, --no-build and --no-results
#
# Method: for each repetition, for each scenario, each server in turn (interleaved, so
# drift hits all alike): start it, wait for GET /health/live, warm up, then measure one
# wrk run while sampling the server's process tree (scripts/bench/measure.py): CPU
# utime+stime from /proc/<pid>/stat (workers included) per completed request, and peak
# resident memory. Medians over repetitions go into the table. The binaries are copied
# into the run's folder first, so a rebuild during the run changes nothing. Before each
# measurement the harness waits for the machine to be idle, and a measurement during which
# other processes took CPU anyway is repeated (--max-other, --retries, --quiet-wait).
# With 2+ cores the server and the load generator are pinned apart (taskset): the server
# on the first half of the CPUs (CPU 0 on 2 cores), wrk on the rest (CPU 1).
#
# Output: progress on stderr; raw records, CSV, JSON and a Markdown summary under
# bench-out/<run>/ (bench-out/latest points at the last run); a full (non --quick) run
# also rewrites benches/RESULTS.md and benches/results.svg.
#
# Needs: cargo, python3, curl, wrk (apt-get installs it when missing and run as root),
# node >= 20 and npm for the Fastify peers (skipped with a warning when absent).
#
# Usage: scripts/bench.sh [options]
#   --scenario REGEX     run only the scenarios matching REGEX (egrep, anchored)
#   --servers LIST       comma-separated subset of:
#                        agentd,hyper-ceiling,fastify,fastify-full,fastify-cluster (default: all)
#   --duration S         seconds per measured run (default 10)
#   --reps N             repetitions (default 3)
#   --warmup S           warm-up seconds before each measured run (default 2)
#   --connections N      override every scenario's connection count
#   --pin | --no-pin     pin server and load generator to separate CPUs (default: on with 2+ cores)
#   --server-cpus LIST   CPUs for the server when pinned (default: first half)
#   --client-cpus LIST   CPUs for wrk / the client when pinned (default: the rest)
#   --max-other CORES    a measured run during which other processes (a compiler, say) used
#                        more than CORES cores on average is repeated (default 0.15)
#   --retries N          repeat such a run at most N times, then keep it, flagged (default 2)
#   --quiet-wait S       before each measurement, wait up to S seconds for the machine to be
#                        idle (busy CPU below --max-other) (default 30; 0 to skip)
#   --no-build           use the binaries already built
#   --no-results         write bench-out/ only, leave benches/RESULTS.md and results.svg alone
#   --quick              smoke run: 1 rep x 2 s, 1 s warm-up, scenarios health-50, agent-50,
#                        agent-close, openai-50, sse-10k (1,000 connections), llm
#                        (fastify-full in agent-50 only) and llm.sh --quick's llm-relay,
#                        llm-latency, llm-10k, openai-relay;
#                        writes bench-out/ only
#   -h, --help           this text
#
# Exit status: non-zero when a build, a server start, the response check, or an agentd
# measurement (errors, a dead server) fails. Peers' errors are reported, not fatal.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELPERS=$ROOT/scripts/bench
CEILING_DIR=$ROOT/benches/peers/hyper-ceiling
FASTIFY_DIR=$ROOT/benches/peers/fastify
BODY=$HELPERS/agent-body.json
OPENAI_BODY=$HELPERS/llm-body.json

DURATION=10
REPS=3
WARMUP=2
SCENARIO_RE='.*'
SCENARIO_SET=0
CONNECTIONS=''
PIN=auto
SERVER_CPUS=''
CLIENT_CPUS=''
SERVERS='agentd,hyper-ceiling,fastify,fastify-full,fastify-cluster'
BUILD=1
QUICK=0
RESULTS=1
MAX_OTHER=0.15
RETRIES=2
QUIET_WAIT=30
SSE_CONNECTIONS=10000
# Below the ephemeral range, so no outgoing connection (of a test, of the load
# generator) can be holding the port when a server binds it.
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
PORT_BASE=${BENCH_PORT_BASE:-$(( EPHEMERAL_LOW - 2000 ))}
ORIG_ARGS=$(python3 -c 'import shlex, sys; print(shlex.join(sys.argv[1:]))' "$@" 2>/dev/null || echo "$*")

usage() { sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --scenario) SCENARIO_RE=$2; SCENARIO_SET=1; shift 2 ;;
    --servers) SERVERS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --pin) PIN=1; shift ;;
    --no-pin) PIN=0; shift ;;
    --server-cpus) SERVER_CPUS=$2; PIN=1; shift 2 ;;
    --client-cpus) CLIENT_CPUS=$2; PIN=1; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --no-results) RESULTS=0; shift ;;
    --max-other) MAX_OTHER=$2; shift 2 ;;
    --retries) RETRIES=$2; shift 2 ;;
    --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

if [[ $QUICK == 1 ]]; then
  DURATION=2; REPS=1; WARMUP=1; SSE_CONNECTIONS=1000; RESULTS=0
  [[ $SCENARIO_SET == 1 ]] || SCENARIO_RE='health-50|agent-50|agent-close|openai-50|sse-10k|llm|llm-relay|llm-latency|llm-10k|openai-relay'
fi
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 1 ]] || die "--duration wants whole seconds >= 1"
[[ $REPS =~ ^[0-9]+$ && $REPS -ge 1 ]] || die "--reps wants an integer >= 1"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "--warmup wants whole seconds"
[[ -z $CONNECTIONS || $CONNECTIONS =~ ^[0-9]+$ ]] || die "--connections wants an integer"
[[ $MAX_OTHER =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--max-other wants a number of cores"
[[ $RETRIES =~ ^[0-9]+$ ]] || die "--retries wants an integer"
[[ $QUIET_WAIT =~ ^[0-9]+$ ]] || die "--quiet-wait wants whole seconds"

# ------------------------------------------------------------------------ scenarios
# name | kind | method+path | connections | extra
SCENARIOS=(
  "health-50|wrk|GET /health|50|"
  "health-256|wrk|GET /health|256|"
  "agent-50|wrk|POST /agent|50|"
  "agent-256|wrk|POST /agent|256|"
  "agent-close|wrk|POST /agent|50|close"
  "openai-50|wrk|POST /v1/chat/completions|50|openai"
  "sse-10k|hold|POST /agent|$SSE_CONNECTIONS|"
  "llm|llm|POST /agent|50|"
  "llm-relay|llm-peers|POST /agent|50|"
  "llm-latency|llm-peers|POST /agent|0|"
  "llm-10k|llm-peers|POST /agent|10000|"
  "openai-relay|llm-peers|POST /v1/chat/completions|50|"
)
SELECTED=()
SKIPPED=0
RUN_LLM=0
LLM_PEERS=()
for s in "${SCENARIOS[@]}"; do
  name=${s%%|*}
  if [[ $name =~ ^($SCENARIO_RE)$ ]]; then
    if [[ $s == *"|llm-peers|"* ]]; then
      LLM_PEERS+=("$name")
      SKIPPED=1
      continue
    fi
    if [[ $s == *"|llm|"* ]]; then
      RUN_LLM=1
      SKIPPED=1
      continue
    fi
    SELECTED+=("$s")
  fi
done
run_llm_overhead() {
  local secs=$DURATION out rate
  [[ $QUICK == 1 ]] && secs=2
  mkdir -p "$OUT"
  # The rates the LLM path must hold: a modest load and the target (1,000 answers/s).
  for rate in 100 1000; do
    log "scenario llm: cargo bench --bench llm_overhead -- --rate $rate --seconds $secs"
    out=$(cd "$ROOT" && cargo bench --quiet --bench llm_overhead -- --rate "$rate" --seconds "$secs" 2>>"$OUT/llm-overhead.log") \
      || die "the LLM overhead benchmark failed (see $OUT/llm-overhead.log)"
    printf '%s\n' "$out" > "$OUT/llm-overhead-$rate.md"
    printf '%s\n' "$out" >&2
    if [[ $RESULTS == 1 ]]; then
      {
        printf '\n## LLM path at %s answers/s: agentd overhead over the upstream\n\n' "$rate"
        printf 'Command: `cargo bench --bench llm_overhead -- --rate %s --seconds %s`\n' "$rate" "$secs"
        printf '%s\n' "$out"
      } >> "$ROOT/benches/RESULTS.md"
    fi
  done
}
# The LLM scenarios against the gateways: scripts/bench/llm.sh with this run's settings.
run_llm_peers() {
  [[ ${#LLM_PEERS[@]} -gt 0 ]] || return 0
  local args=(--scenario "$(IFS='|'; echo "${LLM_PEERS[*]}")")
  if [[ $QUICK == 1 ]]; then args+=(--quick)
  else args+=(--duration "$DURATION" --reps "$REPS" --warmup "$WARMUP"); fi
  [[ $BUILD == 0 ]] && args+=(--no-build)
  [[ $RESULTS == 0 ]] && args+=(--no-results)
  log "scenarios ${LLM_PEERS[*]}: scripts/bench/llm.sh ${args[*]}"
  "$HELPERS/llm.sh" "${args[@]}" || die "scripts/bench/llm.sh failed"
}
if [[ ${#SELECTED[@]} == 0 ]]; then
  if [[ $RUN_LLM == 1 || ${#LLM_PEERS[@]} -gt 0 ]]; then
    RESULTS_ALL=$RESULTS
    RESULTS=0
    OUT=$ROOT/bench-out/$(date -u +%Y%m%d-%H%M%S)-llm
    [[ $RUN_LLM == 1 ]] && run_llm_overhead
    RESULTS=$RESULTS_ALL
    run_llm_peers
    exit 0
  fi
  [[ $SKIPPED == 1 ]] && exit 0
  die "no scenario matches '$SCENARIO_RE'"
fi

IFS=, read -r -a SERVER_LIST <<< "$SERVERS"
for s in "${SERVER_LIST[@]}"; do
  case $s in agentd|hyper-ceiling|fastify|fastify-full|fastify-cluster) ;; *) die "unknown server: $s" ;; esac
done

# fastify-full is measured where the plugins' per-request work is what is compared (the
# wrk scenarios on /health and /agent), not in sse-10k and llm; --quick keeps one
# measurement of it (agent-50), enough to check that the variant starts and answers.
runs_in() { # server scenario kind
  [[ $2 == openai-* ]] && { [[ $1 == agentd ]]; return; }  # the peers have no OpenAI route
  [[ $1 == fastify-full ]] || return 0
  [[ $3 == wrk ]] || return 1
  [[ $QUICK == 1 ]] && { [[ $2 == agent-50 ]]; return; }
  return 0
}

# --------------------------------------------------------------------------- CPUs
NCPU=$(nproc)
if [[ $PIN == auto ]]; then
  if [[ $NCPU -ge 2 ]]; then PIN=1; else PIN=0; fi
fi
if [[ $PIN == 1 ]]; then
  command -v taskset >/dev/null || die "taskset not found (util-linux)"
  mapfile -t ONLINE < <(taskset -cp $$ | sed 's/.*: //' | tr ',' '\n' | awk -F- '{ if (NF==2) for (i=$1;i<=$2;i++) print i; else print $1 }')
  [[ ${#ONLINE[@]} -ge 2 ]] || die "--pin needs 2 or more CPUs"
  half=$(( ${#ONLINE[@]} / 2 ))
  [[ -n $SERVER_CPUS ]] || SERVER_CPUS=$(IFS=,; echo "${ONLINE[*]:0:$half}")
  [[ -n $CLIENT_CPUS ]] || CLIENT_CPUS=$(IFS=,; echo "${ONLINE[*]:$half}")
  count_cpus() { taskset -c "$1" true && echo "$1" | tr ',' '\n' | awk -F- '{ n += (NF==2) ? $2-$1+1 : 1 } END { print n }'; }
  SERVER_CORES=$(count_cpus "$SERVER_CPUS")
  CLIENT_CORES=$(count_cpus "$CLIENT_CPUS")
  SERVER_PIN=(taskset -c "$SERVER_CPUS")
  CLIENT_PIN=(taskset -c "$CLIENT_CPUS")
else
  SERVER_CORES=$NCPU
  CLIENT_CORES=$NCPU
  SERVER_PIN=()
  CLIENT_PIN=()
fi
WRK_THREADS=$CLIENT_CORES

# ------------------------------------------------------------------------- set-up
command -v python3 >/dev/null || die "python3 not found"
apt_install() {
  [[ $(id -u) == 0 ]] || die "$* missing; install it (apt-get install $*) or run as root"
  log "installing $* (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 || {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  }
}
command -v curl >/dev/null || apt_install curl
command -v wrk >/dev/null || apt_install wrk
command -v wrk >/dev/null || die "wrk not found"

# Sockets: 10k connections need 10k descriptors in the server and in the client.
max_conns=$SSE_CONNECTIONS
[[ -n $CONNECTIONS && $CONNECTIONS -gt $max_conns ]] && max_conns=$CONNECTIONS
want_fds=$(( max_conns + 1024 ))
if [[ $(ulimit -n) != unlimited && $(ulimit -n) -lt $want_fds ]]; then
  ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
log "open-file limit: $(ulimit -n)"

has_server() { [[ ",$SERVERS," == *",$1,"* ]]; }

node_ok() {
  command -v node >/dev/null && command -v npm >/dev/null &&
    [[ $(node -p 'process.versions.node.split(".")[0]') -ge 20 ]]
}
has_fastify() { has_server fastify || has_server fastify-full || has_server fastify-cluster; }
if has_fastify; then
  if ! node_ok; then
    log "WARNING: node >= 20 and npm are needed for the Fastify peers (Fastify 5); skipping them"
    kept=()
    for s in "${SERVER_LIST[@]}"; do [[ $s == fastify* ]] || kept+=("$s"); done
    SERVER_LIST=("${kept[@]}")
    SERVERS=$(IFS=,; echo "${SERVER_LIST[*]}")
  fi
fi
[[ ${#SERVER_LIST[@]} -gt 0 ]] || die "no server left to run"
# Measurements in this run (fastify-full sits some scenarios out).
TOTAL=0
for scen in "${SELECTED[@]}"; do
  IFS='|' read -r sname kind _ <<< "$scen"
  for server in "${SERVER_LIST[@]}"; do
    if runs_in "$server" "$sname" "$kind"; then TOTAL=$(( TOTAL + REPS )); fi
  done
done
[[ $TOTAL -gt 0 ]] || die "none of the servers runs in the scenarios chosen (fastify-full: health-* and agent-* only)"

if [[ $BUILD == 1 ]]; then
  if has_server agentd; then
    log "building agentd (cargo build --release)"
    (cd "$ROOT" && cargo build --release) || die "agentd build failed"
  fi
  if has_server hyper-ceiling; then
    log "building hyper-ceiling (cargo build --release)"
    (cd "$CEILING_DIR" && cargo build --release --locked) || die "hyper-ceiling build failed"
  fi
fi
if has_fastify; then
  if [[ ! -f $FASTIFY_DIR/node_modules/.package-lock.json ||
        $FASTIFY_DIR/package-lock.json -nt $FASTIFY_DIR/node_modules/.package-lock.json ]]; then
    log "installing the Fastify peer (npm ci)"
    (cd "$FASTIFY_DIR" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed"
  fi
fi
# shellcheck source=lib/target_dir.sh
source "$ROOT/scripts/lib/target_dir.sh"
AGENTD_BIN=$(cargo_target_dir "$ROOT")/release/agentd
CEILING_BIN=$(cargo_target_dir "$CEILING_DIR")/release/hyper-ceiling
if has_server agentd; then [[ -x $AGENTD_BIN ]] || die "$AGENTD_BIN not built"; fi
if has_server hyper-ceiling; then [[ -x $CEILING_BIN ]] || die "$CEILING_BIN not built"; fi

# ------------------------------------------------------------------------- output
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=$ROOT/bench-out/$STAMP
[[ $QUICK == 1 ]] && OUT=$OUT-quick
LOGS=$OUT/logs
mkdir -p "$LOGS"
ln -sfn "$(basename "$OUT")" "$ROOT/bench-out/latest"
RAW=$OUT/raw.jsonl
: > "$RAW"

# Measure copies of the binaries, so that a rebuild during the run changes nothing.
mkdir -p "$OUT/bin"
if has_server agentd; then cp "$AGENTD_BIN" "$OUT/bin/agentd"; AGENTD_BIN=$OUT/bin/agentd; fi
if has_server hyper-ceiling; then cp "$CEILING_BIN" "$OUT/bin/hyper-ceiling"; CEILING_BIN=$OUT/bin/hyper-ceiling; fi

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ $COMMIT != unknown && -n $(GIT_OPTIONAL_LOCKS=0 git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
  COMMIT=$COMMIT-dirty
fi
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
[[ -n $CPU_MODEL ]] || CPU_MODEL=$(uname -m)
BENCH_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) BENCH_COMMIT=$COMMIT BENCH_NPROC=$NCPU \
BENCH_CPU_MODEL=$CPU_MODEL BENCH_NODE=$(node -v 2>/dev/null || echo none) \
BENCH_WRK=$(wrk -v 2>&1 | head -1 | awk '{ print $2 }') \
BENCH_RUSTC=$(rustc -V 2>/dev/null | awk '{ print $2 }') \
BENCH_DURATION=$DURATION BENCH_REPS=$REPS BENCH_WARMUP=$WARMUP BENCH_PIN=$PIN \
BENCH_SERVER_CPUS=${SERVER_CPUS:-all} BENCH_CLIENT_CPUS=${CLIENT_CPUS:-all} \
BENCH_SERVER_CORES=$SERVER_CORES BENCH_WRK_THREADS=$WRK_THREADS BENCH_SERVERS=$SERVERS \
BENCH_QUICK=$QUICK BENCH_SSE_CONNECTIONS=$SSE_CONNECTIONS BENCH_ARGS=$ORIG_ARGS BENCH_MAX_OTHER=$MAX_OTHER \
python3 - "$OUT/meta.json" <<'EOF'
import json, os, platform, sys
e = os.environ
mem_kib = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal:"))
json.dump({
    "date": e["BENCH_DATE"], "commit": e["BENCH_COMMIT"], "nproc": int(e["BENCH_NPROC"]),
    "cpu_model": e["BENCH_CPU_MODEL"], "kernel": platform.release(),
    "mem_gib": round(mem_kib / 2**20, 1), "node": e["BENCH_NODE"], "wrk": e["BENCH_WRK"],
    "rustc": e["BENCH_RUSTC"], "duration_s": int(e["BENCH_DURATION"]), "reps": int(e["BENCH_REPS"]),
    "warmup_s": int(e["BENCH_WARMUP"]), "pinned": e["BENCH_PIN"] == "1",
    "server_cpus": e["BENCH_SERVER_CPUS"], "client_cpus": e["BENCH_CLIENT_CPUS"],
    "server_cores": int(e["BENCH_SERVER_CORES"]), "wrk_threads": int(e["BENCH_WRK_THREADS"]),
    "servers": e["BENCH_SERVERS"].split(","), "quick": e["BENCH_QUICK"] == "1",
    "sse_connections": int(e["BENCH_SSE_CONNECTIONS"]), "max_other": float(e["BENCH_MAX_OTHER"]),
    "command": ("scripts/bench.sh " + e["BENCH_ARGS"]).strip(),
}, open(sys.argv[1], "w"), indent=2)
EOF

# ------------------------------------------------------------------------ servers
declare -A PORT
i=0
for s in agentd hyper-ceiling fastify fastify-cluster fastify-full; do PORT[$s]=$(( PORT_BASE + i )); i=$(( i + 1 )); done

SERVER_PID=''
descendants() {
  local p c
  for p in "$@"; do
    for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do
      echo "$c"; descendants "$c"
    done
  done
}
stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  local pid=$SERVER_PID kids
  SERVER_PID=''
  kids=$(descendants "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
}
cleanup() {
  local rc=$?
  stop_server
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_server() { # name → SERVER_PID
  local name=$1 port=${PORT[$1]} log=$LOGS/$1.log
  if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then
    die "port $port is already in use (set BENCH_PORT_BASE)"
  fi
  echo "=== start $(date -u +%T)" >> "$log"
  case $name in
    agentd)
      NODE_ENV=production PORT=$port HOST=127.0.0.1 WORKERS=$SERVER_CORES \
        "${SERVER_PIN[@]}" "$AGENTD_BIN" >> "$log" 2>&1 & ;;
    hyper-ceiling)
      PORT=$port HOST=127.0.0.1 WORKERS=$SERVER_CORES \
        "${SERVER_PIN[@]}" "$CEILING_BIN" >> "$log" 2>&1 & ;;
    fastify)
      NODE_ENV=production PORT=$port HOST=127.0.0.1 \
        "${SERVER_PIN[@]}" node "$FASTIFY_DIR/server.js" >> "$log" 2>&1 & ;;
    fastify-full)
      NODE_ENV=production FULL=1 PORT=$port HOST=127.0.0.1 \
        "${SERVER_PIN[@]}" node "$FASTIFY_DIR/server.js" >> "$log" 2>&1 & ;;
    fastify-cluster)
      NODE_ENV=production CLUSTER=1 WORKERS=$SERVER_CORES PORT=$port HOST=127.0.0.1 \
        "${SERVER_PIN[@]}" node "$FASTIFY_DIR/server.js" >> "$log" 2>&1 & ;;
  esac
  SERVER_PID=$!
  local t
  for t in $(seq 300); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      tail -20 "$log" >&2; SERVER_PID=''; die "$name exited during start-up (log: $log)"
    fi
    if curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$port/health/live"; then
      [[ $name == fastify-cluster ]] && sleep 0.5  # let every worker finish listening
      return 0
    fi
    sleep 0.1
  done
  tail -20 "$log" >&2
  die "$name did not answer GET /health/live within 30 s (log: $log)"
}

# Wait (at most QUIET_WAIT s) until other processes leave the CPUs alone: busy CPU time
# over 1 s below MAX_OTHER cores while nothing of ours is running.
wait_quiet() {
  [[ $QUIET_WAIT -gt 0 ]] || return 0
  python3 - "$QUIET_WAIT" "$MAX_OTHER" <<'EOF' || log "the machine stayed busy for ${QUIET_WAIT}s; measuring anyway"
import os, sys, time
limit_s, max_other = float(sys.argv[1]), float(sys.argv[2])
tick = os.sysconf("SC_CLK_TCK")
def busy():  # user + nice + system + irq + softirq
    f = open("/proc/stat").readline().split()
    return sum(int(x) for x in f[1:4]) + int(f[6]) + int(f[7])
start, waited = time.monotonic(), False
while True:
    b0 = busy(); time.sleep(1); b1 = busy()
    if (b1 - b0) / tick < max_other:
        if waited:
            print(f"bench: the machine is idle again after {time.monotonic() - start:.0f}s", file=sys.stderr)
        sys.exit(0)
    if not waited:
        print(f"bench: other processes are using {(b1 - b0) / tick:.1f} cores; waiting up to {limit_s:.0f}s", file=sys.stderr)
        waited = True
    if time.monotonic() - start >= limit_s:
        sys.exit(1)
EOF
}

# One request each to check that what is measured is the right answer.
# The OpenAI front door's answer to the benchmark's body: 200, the echo text in
# chat.completion.chunk deltas, finish_reason stop, data: [DONE] last.
check_openai() { # name
  local name=$1 port=${PORT[$1]} body=$OUT/check-$1-openai.body
  curl -sf --max-time 5 -o "$body" -X POST -H 'content-type: application/json' \
    --data-binary @"$OPENAI_BODY" "http://127.0.0.1:$port/v1/chat/completions" ||
    die "$name: POST /v1/chat/completions failed"
  python3 - "$body" <<'EOF' || die "$name: POST /v1/chat/completions gave a wrong answer (see $body)"
import json, sys
datas = [l[6:] for l in open(sys.argv[1], encoding="utf-8").read().split("\n") if l.startswith("data: ")]
assert datas and datas[-1] == "[DONE]", "no data: [DONE] last"
chunks = [json.loads(d) for d in datas[:-1]]
text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
assert text == "\u26a1 High-speed response to: Hello Fast Agent!", f"text {text!r}"
assert [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")][-1] == "stop", "no stop"
EOF
}

check_server() { # name
  local name=$1 port=${PORT[$1]} hdr=$OUT/check-$1.headers body=$OUT/check-$1.body
  curl -sf --max-time 5 -o /dev/null "http://127.0.0.1:$port/health" ||
    die "$name: GET /health did not answer 2xx"
  curl -s --max-time 5 -D "$hdr" -o "$body" -X POST -H 'content-type: application/json' \
    --data-binary @"$BODY" "http://127.0.0.1:$port/agent" || die "$name: POST /agent failed"
  python3 - "$name" "$hdr" "$body" <<'EOF' || die "$name: POST /agent gave a wrong answer (see $OUT/check-$name.*)"
import json, re, sys
name, hdr, body = sys.argv[1], open(sys.argv[2], encoding="latin-1", newline="").read(), open(sys.argv[3], "rb").read().decode()
status = hdr.split("\r\n", 1)[0]
h = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in hdr.split("\r\n")[1:]) if k}
errors = []
if " 200" not in status: errors.append(f"status line {status!r}")
if h.get("content-type", "").replace(" ", "").lower() != "text/event-stream;charset=utf-8": errors.append(f"content-type {h.get('content-type')!r}")
if h.get("cache-control") != "no-cache": errors.append("cache-control")
if h.get("x-accel-buffering") != "no": errors.append("x-accel-buffering")
# The feature-equal peer must really do agentd's per-response work: helmet's 12 headers
# (the ones agentd sends) and X-Response-Time on the stream's head.
SECURITY = ["content-security-policy", "cross-origin-opener-policy", "cross-origin-resource-policy",
            "origin-agent-cluster", "referrer-policy", "strict-transport-security",
            "x-content-type-options", "x-dns-prefetch-control", "x-download-options",
            "x-frame-options", "x-permitted-cross-domain-policies", "x-xss-protection"]
if name == "fastify-full":
    missing = [k for k in SECURITY + ["x-response-time"] if k not in h]
    if missing: errors.append(f"missing headers {missing}")
events = body.split("\n\n")
if events[-1] != "" : errors.append("body does not end with a blank line")
events = [e for e in events if e]
names, datas = [], []
for e in events:
    lines = e.split("\n")
    if len(lines) != 2 or not lines[0].startswith("event: ") or not lines[1].startswith("data: "):
        errors.append(f"bad frame {e[:80]!r}"); continue
    names.append(lines[0][7:]); datas.append(json.loads(lines[1][6:]))
if names != ["RESPONSE", "RESPONSE", "done"]: errors.append(f"events {names}")
else:
    ulid = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
    ids = [d.get("id", "") for d in datas]
    if not all(ulid.match(i) for i in ids) or ids != sorted(set(ids)): errors.append(f"ids {ids}")
    if datas[0].get("content") != "\u26a1 High-speed response to: Hello Fast Agent!": errors.append("content")
    if [d.get("source") for d in datas] != ["bench"] * 3: errors.append("source")
    if datas[1].get("is_complete") is not True or datas[1].get("content") != " ": errors.append("stream end")
    if datas[0].get("stream_id") != datas[1].get("stream_id"): errors.append("stream_id")
    if list(datas[2].keys()) != ["content_type", "event_name", "schema_version", "id", "source", "metadata"]: errors.append("done keys")
if errors:
    print(f"{name}: " + "; ".join(errors), file=sys.stderr); sys.exit(1)
EOF
}

# ------------------------------------------------------------------------ the run
per_run=$(( DURATION + WARMUP + 2 ))
log "run $OUT"
log "servers: $SERVERS; scenarios: $(for s in "${SELECTED[@]}"; do printf '%s ' "${s%%|*}"; done)"
log "$REPS rep(s) x ${DURATION}s, warm-up ${WARMUP}s; pinned: $([[ $PIN == 1 ]] && echo "server CPU(s) $SERVER_CPUS, client CPU(s) $CLIENT_CPUS" || echo no); server cores $SERVER_CORES"
log "about $(( TOTAL * per_run / 60 + 1 )) min for $TOTAL measurements"

declare -A CHECKED
FAILED=0
n=0
for rep in $(seq "$REPS"); do
  for scen in "${SELECTED[@]}"; do
    IFS='|' read -r sname kind mpath conns extra <<< "$scen"
    [[ -n $CONNECTIONS ]] && conns=$CONNECTIONS
    method=${mpath%% *}; path=${mpath#* }
    for server in "${SERVER_LIST[@]}"; do
      runs_in "$server" "$sname" "$kind" || continue
      n=$(( n + 1 ))
      log "[$n/$TOTAL] rep $rep/$REPS  $sname  $server  ($conns connections)"
      wait_quiet
      start_server "$server"
      if [[ -z ${CHECKED[$server]:-} ]]; then check_server "$server"; CHECKED[$server]=1; fi
      if [[ $extra == openai && -z ${CHECKED[$server-openai]:-} ]]; then check_openai "$server"; CHECKED[$server-openai]=1; fi
      port=${PORT[$server]}
      url=http://127.0.0.1:$port$path
      wrk_env=(env BENCH_BODY_FILE=)
      [[ $method == POST ]] && wrk_env=(env BENCH_BODY_FILE="$BODY")
      [[ $extra == openai ]] && wrk_env=(env BENCH_BODY_FILE="$OPENAI_BODY")
      wrk_extra=()
      [[ $extra == close ]] && wrk_extra=(-H 'Connection: close')
      threads=$WRK_THREADS
      (( threads > conns )) && threads=$conns
      if [[ $WARMUP -gt 0 ]]; then
        wconns=$conns; [[ $kind == hold ]] && wconns=50
        "${wrk_env[@]}" "${CLIENT_PIN[@]}" wrk -t "$threads" -c "$wconns" -d "${WARMUP}s" \
          -s "$HELPERS/wrk.lua" "${wrk_extra[@]}" "$url" > /dev/null 2>&1 || true
      fi
      meta=(--meta "scenario=$sname" --meta "server=$server" --meta "rep=$rep"
            --meta "conns=$conns" --meta "duration_s=$DURATION" --meta "server_cores=$SERVER_CORES")
      if [[ $kind == wrk ]]; then
        load=("${wrk_env[@]}" "${CLIENT_PIN[@]}" wrk -t "$threads" -c "$conns" -d "${DURATION}s"
              --timeout 5s -s "$HELPERS/wrk.lua" "${wrk_extra[@]}" "$url")
      else
        load=("${CLIENT_PIN[@]}" python3 "$HELPERS/hold.py" --port "$port" --path "$path"
              --body "$BODY" --connections "$conns" --hold "$DURATION")
      fi
      attempt=0
      while :; do
        attempt=$(( attempt + 1 ))
        rc=0
        python3 "$HELPERS/measure.py" --pid "$SERVER_PID" --log "$LOGS/load.log" \
          --max-other "$MAX_OTHER" "${meta[@]}" --meta "attempt=$attempt" -- \
          "${load[@]}" > "$OUT/last.json" || rc=$?
        if [[ $rc == 5 && $attempt -le $RETRIES ]]; then
          log "other processes were busy during that run; measuring again"
          wait_quiet
          "${wrk_env[@]}" "${CLIENT_PIN[@]}" wrk -t "$threads" -c 50 -d 1s \
            -s "$HELPERS/wrk.lua" "${wrk_extra[@]}" "$url" > /dev/null 2>&1 || true
          continue
        fi
        break
      done
      if [[ $rc == 5 ]]; then
        rc=0
        log "kept it: the machine stayed busy (flagged in the results)"
      fi
      cat "$OUT/last.json" >> "$RAW"
      stop_server
      if [[ $rc != 0 ]]; then
        if [[ $server == agentd ]]; then FAILED=1; fi
        log "measurement failed (exit $rc): $server $sname"
        [[ $rc == 2 || $rc == 3 ]] && die "the load tool did not run (see $LOGS/load.log)"
      fi
      if [[ $server == agentd ]]; then
        python3 - "$OUT/last.json" <<'EOF' || { FAILED=1; log "agentd had errors in this run"; }
import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip()]
r = json.loads(lines[-1]) if lines else {}
bad = r.get("non_2xx", 0) + r.get("socket_errors", 0) + r.get("bad_body", 0)
sys.exit(1 if not r or bad or not r.get("server_alive", True) else 0)
EOF
      fi
    done
  done
done

# ------------------------------------------------------------------------ report
report=(python3 "$HELPERS/report.py" --raw "$RAW" --meta "$OUT/meta.json" --out "$OUT")
if [[ $RESULTS == 1 ]]; then
  report+=(--results-md "$ROOT/benches/RESULTS.md" --svg "$ROOT/benches/results.svg")
else
  report+=(--svg "$OUT/results.svg")
fi
"${report[@]}"
[[ $RUN_LLM == 1 ]] && run_llm_overhead
log "raw results: $OUT (results.csv, results.json, summary.md)"
run_llm_peers
if [[ $FAILED == 1 ]]; then
  die "agentd failed or had errors in at least one run (see the table and $LOGS)"
fi

#!/usr/bin/env bash
# scripts/bench/proxy.sh: agentd's proxy mode (AGENT=proxy) in front of the Python
# reference server, against the Python server alone.
#
# Upstream: sentient-agent-framework 0.3.0's DefaultServer (FastAPI + uvicorn, one
# process, access log off) running scripts/interop/reference_agent.py: per request a
# text block, a JSON block, a text stream (3 chunks + completion for the bench prompt),
# done; 7 SSE events. Load: wrk with scripts/bench/wrk.lua POSTing
# scripts/bench/agent-body.json (a full session, so the reference can answer it
# directly). agentd runs with WORKERS=1 (one core) and default proxy settings.
#
# Scenarios (each server started fresh, warmed up, then measured while
# scripts/bench/measure.py samples the measured process's CPU; the other processes'
# CPU is read from /proc before and after):
#   python-c1        wrk -> Python, 1 connection: the reference's own latency
#   proxy-c1         wrk -> agentd -> Python, 1 connection: latency agentd adds
#   python-cN        wrk -> Python, N connections (--connections, default 50): throughput
#   proxy-cN-rK      wrk -> agentd -> K Python replicas (--replicas, default "1 2 4"),
#                    least-inflight balancing: throughput, agentd's CPU per request
#   proxy-replay-cN  wrk -> agentd -> scripts/bench/proxy-replay.py, which writes the
#                    reference's exact answer the reference's way (two small writes per
#                    event) without FastAPI or an agent: a cheap upstream, so agentd's
#                    core does far more of the work: its rate per core with answers
#                    like the reference's
#   proxy-echo-cN    wrk -> agentd proxy -> agentd echo agent (3 events in one write):
#                    the proxy's own ceiling with the smallest answer
# From these: added latency (p50/p99 at 1 connection), throughput through agentd
# against the Python server alone, and how many Python replicas one agentd core can
# front: the proxy's rate per core (proxy-replay: requests / share of its core used)
# over one Python replica's rate per core (python-cN), and, for comparison, Python's
# CPU per request over agentd's CPU per request at the load one replica gives it.
#
# Pinning (taskset): with 2-3 CPUs, agentd and wrk share CPU 0 and every Python replica
# runs on CPU 1 (so Python has a whole core in both the direct and the proxied runs;
# in the saturation scenario the proxy has CPU 0 alone and the echo upstream and wrk
# share CPU 1). With 4+ CPUs: agentd CPU 0, wrk CPU 1, replicas spread over the rest.
#
# Output: progress on stderr; records (JSON lines) and summary.md under
# bench-out/proxy-<time>/; the summary is printed at the end.
#
# Usage: scripts/bench/proxy.sh [--duration S] [--warmup S] [--reps N] [--connections N]
#                               [--replicas "1 2 4"] [--no-build] [--quiet-wait S] [--quick]
#   --quiet-wait S: before each measurement wait up to S s (default 30) for the machine
#                   to be idle (under 0.3 cores busy); the table shows other load anyway
#   --quick: 1 rep x 2 s, 1 s warm-up, replicas "1 2", no quiet wait (a smoke run)
# Needs: cargo, python3 >= 3.11 (the venv comes from scripts/proxy-interop.sh
# --setup-only), wrk (apt-get installs it when missing and run as root), taskset.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HELPERS=$ROOT/scripts/bench
BODY=$HELPERS/agent-body.json
DURATION=10
WARMUP=2
REPS=3
CONNS=50
REPLICAS="1 2 4"
BUILD=1
QUIET_WAIT=30
MAX_OTHER=0.3

log() { printf 'proxy bench: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --replicas) REPLICAS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
    --quick) DURATION=2; WARMUP=1; REPS=1; REPLICAS="1 2"; QUIET_WAIT=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

# ------------------------------------------------------------------------ tools
if ! command -v wrk >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing wrk"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    die "wrk is needed (apt-get install wrk)"
  fi
fi
command -v taskset >/dev/null || die "taskset is needed (util-linux)"
VPY=$("$ROOT/scripts/proxy-interop.sh" --setup-only)

cd "$ROOT"
if [[ $BUILD == 1 ]]; then
  log "cargo build --release --bin agentd"
  cargo build --release --bin agentd >&2
fi
OUT=$ROOT/bench-out/proxy-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT/logs"
# A copy, so a rebuild during the run changes nothing.
# shellcheck source=../lib/target_dir.sh
source "$ROOT/scripts/lib/target_dir.sh"
cp "$(cargo_target_dir "$ROOT")/release/agentd" "$OUT/agentd"
BIN=$OUT/agentd
RECORDS=$OUT/records.jsonl
: > "$RECORDS"

NCPU=$(nproc)
(( NCPU >= 2 )) || die "needs at least 2 CPUs (agentd and the Python server pinned apart)"
if (( NCPU >= 4 )); then
  AGENTD_CPU=0; WRK_CPU=1; PY_CPUS=($(seq 2 $(( NCPU - 1 ))))
else
  AGENTD_CPU=0; WRK_CPU=0; PY_CPUS=(1)
fi
SAT_PROXY_CPU=0
SAT_REST_CPUS=$(seq -s, 1 $(( NCPU - 1 )))

# ------------------------------------------------------------------------ processes
PIDS=()
free_port() { "$VPY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}
trap 'stop_all' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_status URL WANT PID: polls until URL answers WANT (10 s at most).
wait_status() {
  local url=$1 want=$2 pid=$3
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || die "the process for $url exited (logs: $OUT/logs)"
    [[ $(curl -s -o /dev/null -w '%{http_code}' "$url" || true) == "$want" ]] && return 0
    sleep 0.1
  done
  die "$url did not answer $want in 10 s"
}

# start_python CPU: one reference replica; sets REPLY_URL and REPLY_PID.
start_python() {
  local port; port=$(free_port)
  (cd "$ROOT/scripts/interop" && exec taskset -c "$1" "$VPY" reference_agent.py "$port" --quiet) \
    >> "$OUT/logs/python.log" 2>&1 &
  REPLY_PID=$!; PIDS+=("$REPLY_PID")
  REPLY_URL=http://127.0.0.1:$port/assist
  wait_status "$REPLY_URL" 405 "$REPLY_PID"
}

# start_agentd CPU ENV...: agentd, one worker; sets REPLY_URL (its /agent) and REPLY_PID.
start_agentd() {
  local cpu=$1; shift
  local port; port=$(free_port)
  env "$@" PORT="$port" HOST=127.0.0.1 WORKERS=1 NODE_ENV=production \
    taskset -c "$cpu" "$BIN" >> "$OUT/logs/agentd.log" 2>&1 &
  REPLY_PID=$!; PIDS+=("$REPLY_PID")
  REPLY_URL=http://127.0.0.1:$port/agent
  wait_status "http://127.0.0.1:$port/health/ready" 200 "$REPLY_PID"
}

# check_answer URL EVENTS: one POST must end with done after EVENTS events.
check_answer() {
  local body; body=$(curl -s -N -X POST "$1" -H 'content-type: application/json' --data-binary @"$BODY")
  local n; n=$(grep -c '^event: ' <<< "$body" || true)
  [[ $n == "$2" && $(grep '^event: ' <<< "$body" | tail -n1) == "event: done" ]] \
    || die "unexpected answer from $1 ($n events): ${body:0:300}"
}

# wait_quiet: before a measurement, wait (up to QUIET_WAIT s) until the machine's busy
# CPU over one second is below MAX_OTHER cores (other people's compilers skew numbers).
wait_quiet() {
  (( QUIET_WAIT > 0 )) || return 0
  python3 - "$QUIET_WAIT" "$MAX_OTHER" <<'EOF' || log "the machine stayed busy; measuring anyway (see 'other load')"
import os, sys, time
wait, limit = float(sys.argv[1]), float(sys.argv[2])
hz = os.sysconf("SC_CLK_TCK")
def busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    return v[0] + v[1] + v[2] + v[5] + v[6]
end = time.monotonic() + wait
while True:
    b0 = busy(); time.sleep(1.0); cores = (busy() - b0) / hz
    if cores < limit:
        sys.exit(0)
    if time.monotonic() >= end:
        sys.exit(1)
EOF
}

cpu_ticks() {  # summed utime+stime of the given PIDs (all threads)
  local t=0 pid
  for pid in "$@"; do
    t=$(( t + $(cut -d')' -f2- "/proc/$pid/stat" | awk '{print $12 + $13}') ))
  done
  echo "$t"
}

# measure NAME CONNS URL MEASURED_PID OTHER_PIDS...: one wrk run, one record.
measure() {
  local name=$1 conns=$2 url=$3 pid=$4; shift 4
  local others=("$@") threads=1
  (( conns >= 4 )) && threads=2
  BENCH_BODY_FILE=$BODY taskset -c "$WRK_CPU_NOW" wrk -t "$threads" -c "$conns" \
    -d "${WARMUP}s" -s "$HELPERS/wrk.lua" "$url" > /dev/null 2>&1 || true
  wait_quiet
  local o0; o0=$(cpu_ticks "${others[@]}")
  local rec
  rec=$(BENCH_BODY_FILE=$BODY python3 "$HELPERS/measure.py" --pid "$pid" --log "$OUT/logs/load.log" \
        --meta "scenario=$name" --meta "rep=$REP" --meta "conns=$conns" -- \
        taskset -c "$WRK_CPU_NOW" wrk -t "$threads" -c "$conns" -d "${DURATION}s" --timeout 10s \
        -s "$HELPERS/wrk.lua" "$url") || die "measurement $name failed (see $OUT/logs/load.log)"
  local o1; o1=$(cpu_ticks "${others[@]}")
  python3 - "$rec" "$(( o1 - o0 ))" "$(getconf CLK_TCK)" >> "$RECORDS" <<'EOF'
import json, sys
r = json.loads(sys.argv[1]); ticks, hz = int(sys.argv[2]), int(sys.argv[3])
reqs = r.get("requests") or 0
r["others_cpu_us_per_req"] = round(ticks / hz * 1e6 / reqs, 2) if reqs else None
# measure.py counts the upstream processes as "other load": take them out.
wall = r.get("wall_s") or 0
if wall:
    r["other_cpu_util"] = round(max(0.0, r.get("other_cpu_util", 0) - ticks / hz / wall), 3)
print(json.dumps(r, sort_keys=True))
EOF
}

# ------------------------------------------------------------------------ the run
log "run $OUT; $REPS rep(s) x ${DURATION}s (+${WARMUP}s warm-up), $CONNS connections, replicas: $REPLICAS"
log "CPUs: agentd $AGENTD_CPU, wrk $WRK_CPU, Python ${PY_CPUS[*]}; saturation: proxy $SAT_PROXY_CPU, echo + wrk $SAT_REST_CPUS"
for REP in $(seq "$REPS"); do
  WRK_CPU_NOW=$WRK_CPU
  # The reference alone, then agentd in front of it; 1 and N connections.
  for conns in 1 "$CONNS"; do
    log "rep $REP: python-c$conns"
    WRK_CPU_NOW=$AGENTD_CPU  # the Python core stays Python's
    start_python "${PY_CPUS[0]}"; py_url=$REPLY_URL; py_pid=$REPLY_PID
    [[ $REP == 1 && $conns == 1 ]] && check_answer "$py_url" 7
    measure "python-c$conns" "$conns" "$py_url" "$py_pid"
    stop_all
    log "rep $REP: proxy-c$conns"
    WRK_CPU_NOW=$WRK_CPU
    start_python "${PY_CPUS[0]}"; py_url=$REPLY_URL; py_pid=$REPLY_PID
    start_agentd "$AGENTD_CPU" AGENT=proxy AGENT_UPSTREAMS="$py_url"
    [[ $REP == 1 && $conns == 1 ]] && check_answer "$REPLY_URL" 7
    measure "proxy-c$conns" "$conns" "$REPLY_URL" "$REPLY_PID" "$py_pid"
    stop_all
  done
  for k in $REPLICAS; do
    [[ $k == 1 ]] && continue  # proxy-cN above is the one-replica run
    log "rep $REP: proxy-c$CONNS-r$k"
    urls=() py_pids=()
    for i in $(seq 0 $(( k - 1 ))); do
      start_python "${PY_CPUS[$(( i % ${#PY_CPUS[@]} ))]}"
      urls+=("$REPLY_URL"); py_pids+=("$REPLY_PID")
    done
    start_agentd "$AGENTD_CPU" AGENT=proxy PROXY_BALANCE=least-inflight \
      AGENT_UPSTREAMS="$(IFS=,; echo "${urls[*]}")"
    measure "proxy-c$CONNS-r$k" "$CONNS" "$REPLY_URL" "$REPLY_PID" "${py_pids[@]}"
    stop_all
  done
  log "rep $REP: proxy-replay-c$CONNS (a cheap upstream answering like the reference)"
  WRK_CPU_NOW=$SAT_REST_CPUS
  port=$(free_port)
  taskset -c "$SAT_REST_CPUS" python3 "$HELPERS/proxy-replay.py" "$port" >> "$OUT/logs/replay.log" 2>&1 &
  replay_pid=$!; PIDS+=("$replay_pid")
  wait_status "http://127.0.0.1:$port/assist" 405 "$replay_pid"
  start_agentd "$SAT_PROXY_CPU" AGENT=proxy AGENT_UPSTREAMS="http://127.0.0.1:$port/assist"
  [[ $REP == 1 ]] && check_answer "$REPLY_URL" 7
  measure "proxy-replay-c$CONNS" "$CONNS" "$REPLY_URL" "$REPLY_PID" "$replay_pid"
  stop_all
  log "rep $REP: proxy-echo-c$CONNS (the smallest answer)"
  WRK_CPU_NOW=$SAT_REST_CPUS
  start_agentd "$SAT_REST_CPUS" AGENT=echo
  echo_url=${REPLY_URL}; echo_pid=$REPLY_PID
  start_agentd "$SAT_PROXY_CPU" AGENT=proxy AGENT_UPSTREAMS="$echo_url"
  [[ $REP == 1 ]] && check_answer "$REPLY_URL" 3
  measure "proxy-echo-c$CONNS" "$CONNS" "$REPLY_URL" "$REPLY_PID" "$echo_pid"
  stop_all
done

python3 "$HELPERS/proxy-report.py" "$RECORDS" "$CONNS" > "$OUT/summary.md"
cat "$OUT/summary.md"
log "records: $RECORDS"

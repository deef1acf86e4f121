#!/usr/bin/env bash
# scripts/fleet.sh: the fleet drill. HAProxy, with active health checks on
# /health/ready, in front of 3 agentd replicas (AGENT=llm, the fake LLM upstream, one
# shared redis-server for the rate limiter and the resume store, RESUME_STORE=redis),
# under a mixed load of short answers and long streams, while (a) every replica is
# restarted in turn (SIGTERM, wait for its exit, start it again, wait until HAProxy sees
# it up) twice, then (b) one replica is SIGKILLed mid-stream and started again, then
# (c) nothing is disturbed but the clients cut half of the long streams. In every phase
# the load cuts a share of the long streams itself (closes the socket after a random
# number of events) and resumes each through HAProxy on a new connection, so on any
# replica (GET /agent/streams/{id}, Last-Event-ID), as it does every stream that a
# replica's end cut.
#
# What runs (all on 127.0.0.1, ended by PID at the end or on failure):
#   redis-server  the rate limit's store (REDIS_URL), RATE_LIMIT_MAX high so it never
#                 refuses: the drill exercises the shared limiter, not its policy; and
#                 the resume store (RESUME_STORE=redis): every answer copied to a Redis
#                 Stream, resumable on any replica
#   fake-llm      the fake OpenAI upstream: long answers of TOKENS tokens TOKEN_DELAY_MS
#                 apart; short requests ask for one token ([[tokens=1]] in the prompt)
#   agentd x3     the release binary, WORKERS=1 each, SHUTDOWN_TIMEOUT, AGENT_TIMEOUT
#                 and LLM_TIMEOUT as in deploy/kubernetes (the drain covers the longest
#                 answer)
#   haproxy       scripts/fleet/haproxy.cfg: leastconn, checks every 500 ms (fall 2,
#                 rise 2), retries 3 with redispatch, L7 retries on connection failures,
#                 empty responses and 503, server connections closed after each answer
#   load          scripts/fleet/load.py: every response read to its end, a share of the
#                 long streams (CUT_SHARE, RESUME_CUT_SHARE in (c)) cut by the client
#                 and resumed; judged by scripts/fleet/report.py
#
# Targets: rolling restarts: 0 requests without a 2xx, 0 streams without `done`, 0
# `atomic.error`, each replica exited (status 0) within DRAIN_BOUND of its SIGTERM (the
# longest answer + 5 s; past it the replica is SIGKILLed and the drill fails); SIGKILL: nothing hangs, only the killed replica's streams are cut (a
# killed process cannot send `done`; the client sees the chunked body end without its
# last chunk), every other request completes. Resume: every resumed stream complete and
# equal (the events seen and the events resumed are the answer's, each once, byte for
# byte as the stream fetched whole, one `done`, the upstream's full text), except that
# the killed replica's streams may end with `atomic.error` 503 agent_lost.
#
# Output: bench-out/fleet-<time>/ (logs, haproxy.cfg, load reports, fleet.md);
# bench-out/fleet-latest points at it.
#
# Usage: scripts/fleet.sh [--quick] [--no-build] [--no-resume] [--pre-stop S]
#   --quick      for CI (under a minute): shorter answers (1.5 s), fewer clients, a shorter
#                phase (c)
#   --no-build   use the release binaries already built
#   --no-resume  RESUME_STORE=off, no client cuts, no phase (c): the drill as it was
#                before streams were resumable
#   --pre-stop S before each SIGTERM, take the replica out of rotation through HAProxy's
#                runtime API (state drain: no new requests, those in flight go on) and
#                wait S seconds, as Kubernetes does with the manifests' preStop pause
#                (the endpoint is removed, then SIGTERM comes); it is put back once up
#   -h, --help   this text
# HAPROXY_CFG=FILE runs the drill with another HAProxy configuration (same @PORT@
# placeholders), e.g. to see what a setting is worth.
# Needs haproxy, redis-server, curl, python3 (Debian: apt-get install -y haproxy
# redis-server curl). Exit status: 0 passed, 1 a target missed, 2 set-up failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/scripts/fleet

QUICK=0
BUILD=1
PRE_STOP=0
RESUME=1
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "fleet: $*" >&2; exit 2; }
log() { echo "fleet: $(date -u +%T) $*" >&2; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) QUICK=1; shift ;;
    --no-build) BUILD=0; shift ;;
    --no-resume) RESUME=0; shift ;;
    --pre-stop) PRE_STOP=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
for tool in haproxy redis-server curl python3 cargo; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y haproxy redis-server curl)"
done

# The drain settings shipped in deploy/kubernetes/base/configmap.yaml.
cfg() { sed -n "s/^ *$1: \"\{0,1\}\([^\"]*\)\"\{0,1\}$/\1/p" "$ROOT/deploy/kubernetes/base/configmap.yaml"; }
SHUTDOWN_TIMEOUT=$(cfg SHUTDOWN_TIMEOUT)
AGENT_TIMEOUT=$(cfg AGENT_TIMEOUT)
LLM_TIMEOUT=$(cfg LLM_TIMEOUT)
for v in SHUTDOWN_TIMEOUT AGENT_TIMEOUT LLM_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "no $v in deploy/kubernetes/base/configmap.yaml"
done

# CUT_SHARE: the share of long streams the clients cut (and resume) in (a) and (b);
# RESUME_CUT_SHARE and RESUME_SECONDS: phase (c).
if [[ $QUICK == 1 ]]; then
  TOKENS=15 TOKEN_DELAY_MS=100 SHORT=3 LONG=6 ROUNDS=2 RESUME_SECONDS=6
else
  TOKENS=40 TOKEN_DELAY_MS=100 SHORT=4 LONG=16 ROUNDS=2 RESUME_SECONDS=20
fi
CUT_SHARE=0.25 RESUME_CUT_SHARE=0.5
LOAD_ARGS=()
if [[ $RESUME == 1 ]]; then RESUME_STORE=redis; else RESUME_STORE=off CUT_SHARE=0 LOAD_ARGS=(--no-resume); fi
# A replica must exit this soon after SIGTERM: its answers in flight (the longest one,
# with a margin for a loaded machine) are all it waits for. Past it the replica is
# SIGKILLed (as a Kubernetes grace period would) and the drill fails.
DRAIN_BOUND=$(( TOKENS * TOKEN_DELAY_MS / 1000 + 5 ))

# shellcheck source=lib/release_run.sh
source "$ROOT/scripts/lib/release_run.sh"
release_run fleet "$BUILD"

PIDS=()
cleanup() {
  local p left _
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${REPLICA[@]:-}"; do
    if [[ -n $p ]]; then kill "$p" 2>/dev/null || true; fi
  done
  # Nothing is left behind: what has not exited 3 s after SIGTERM is SIGKILLed (a
  # replica draining until SHUTDOWN_TIMEOUT would otherwise outlive the drill).
  for _ in $(seq 30); do
    left=0
    for p in "${PIDS[@]}" "${REPLICA[@]:-}"; do
      if [[ -n $p ]] && kill -0 "$p" 2>/dev/null; then left=1; fi
    done
    [[ $left == 0 ]] && return 0
    sleep 0.1
  done
  for p in "${PIDS[@]}" "${REPLICA[@]:-}"; do
    if [[ -n $p ]]; then kill -KILL "$p" 2>/dev/null || true; fi
  done
}
trap cleanup EXIT

# Replicas keep their port across restarts, as a pod keeps its address behind a
# Service: ports are picked free once, here.
free_ports() {
  python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}
read -r REDIS_PORT HAPROXY_PORT STATS_PORT P1 P2 P3 <<< "$(free_ports 6)"
PORTS=("$P1" "$P2" "$P3")

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  > "$RUN/redis.log" 2>&1 &
PIDS+=($!)
"$RUN/fake-llm" --port 0 --tokens "$TOKENS" --token-delay-ms "$TOKEN_DELAY_MS" --threads 1 \
  > "$RUN/fake-llm.out" 2>&1 &
FAKE_PID=$!; PIDS+=("$FAKE_PID")
for _ in $(seq 100); do
  FAKE_PORT=$(grep -oE '^listening on http://127\.0\.0\.1:[0-9]+' "$RUN/fake-llm.out" | grep -oE '[0-9]+$' || true)
  [[ -n $FAKE_PORT ]] && break
  sleep 0.1
done
[[ -n $FAKE_PORT ]] || die "fake-llm did not start: $(tail -3 "$RUN/fake-llm.out")"
for _ in $(seq 50); do
  redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
  sleep 0.1
done

REPLICA=("" "" "")
start_replica() {  # index
  local i=$1
  env HOST=127.0.0.1 PORT="${PORTS[$i]}" WORKERS=1 NODE_ENV=production LOG_LEVEL=info \
    AGENT=llm OPENAI_API_KEY=sk-fleet OPENAI_BASE_URL="http://127.0.0.1:$FAKE_PORT/v1" \
    OPENAI_MODEL=fake-gpt REDIS_URL="redis://127.0.0.1:$REDIS_PORT" RATE_LIMIT_MAX=100000000 \
    RESUME_STORE="$RESUME_STORE" ENABLE_METRICS=true \
    SHUTDOWN_TIMEOUT="$SHUTDOWN_TIMEOUT" AGENT_TIMEOUT="$AGENT_TIMEOUT" LLM_TIMEOUT="$LLM_TIMEOUT" \
    "$RUN/agentd" >> "$RUN/agentd-$((i + 1)).log" 2>&1 &
  REPLICA[i]=$!
}

sed -e "s/@HAPROXY_PORT@/$HAPROXY_PORT/; s/@STATS_PORT@/$STATS_PORT/; s|@SOCKET@|$RUN/haproxy.sock|" \
    -e "s/@P1@/$P1/; s/@P2@/$P2/; s/@P3@/$P3/" "${HAPROXY_CFG:-$HERE/haproxy.cfg}" > "$RUN/haproxy.cfg"
haproxy -c -q -f "$RUN/haproxy.cfg" || die "haproxy.cfg does not parse"

for i in 0 1 2; do start_replica "$i"; done
haproxy -db -f "$RUN/haproxy.cfg" > "$RUN/haproxy.log" 2>&1 &
PIDS+=($!)

server_status() {  # server name: UP, DOWN, ... as HAProxy's health checks see it
  curl -s --max-time 1 "http://127.0.0.1:$STATS_PORT/stats;csv" \
    | awk -F, -v s="$1" '$1 == "agentd" && $2 == s { print $18 }'
}
wait_up() {  # index
  local name="r$(( $1 + 1 ))" _
  for _ in $(seq 300); do
    [[ $(server_status "$name") == UP ]] && return 0
    kill -0 "${REPLICA[$1]}" 2>/dev/null || die "$name exited: $(tail -3 "$RUN/agentd-$(( $1 + 1 )).log")"
    sleep 0.1
  done
  die "$name not UP in HAProxy within 30 s"
}
for i in 0 1 2; do wait_up "$i"; done
log "HAProxy on :$HAPROXY_PORT, replicas on :$P1 :$P2 :$P3, redis :$REDIS_PORT, fake-llm :$FAKE_PORT (answers $TOKENS x ${TOKEN_DELAY_MS} ms), SHUTDOWN_TIMEOUT=$SHUTDOWN_TIMEOUT, RESUME_STORE=$RESUME_STORE, clients cut $CUT_SHARE of long streams"

in_flight() {  # server name: its sessions now, as HAProxy counts them
  curl -s --max-time 1 "http://127.0.0.1:$STATS_PORT/stats;csv" \
    | awk -F, -v s="$1" '$1 == "agentd" && $2 == s { print $5 }'
}
wait_in_flight() {  # server name, count: waits up to 5 s for that many streams on it
  local _
  for _ in $(seq 50); do
    local now; now=$(in_flight "$1")
    (( ${now:-0} >= $2 )) && break
    sleep 0.1
  done
  in_flight "$1"
}
backend_stats() {  # HAProxy's counters for the backend: retries, redispatches, errors
  curl -s --max-time 1 "http://127.0.0.1:$STATS_PORT/stats;csv" | awk -F, '
    $1 == "agentd" && $2 == "BACKEND" {
      printf "connection errors %s, response errors %s, retries %s, redispatches %s", $14, $15, $16, $17 }'
}

haproxy_api() {  # command: one line to HAProxy's runtime API
  python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
print(s.recv(65536).decode().strip())' "$RUN/haproxy.sock" "$1"
}

run_load() {  # name, share of long streams the clients cut and resume
  rm -f "$RUN/$1.stop"
  python3 "$HERE/load.py" --port "$HAPROXY_PORT" --stop-file "$RUN/$1.stop" \
    --out "$RUN/$1.json" --short "$SHORT" --long "$LONG" --max-seconds 300 \
    --tokens "$TOKENS" --cut-share "$2" "${LOAD_ARGS[@]}" 2> "$RUN/$1.err" &
  LOAD_PID=$!; PIDS+=("$LOAD_PID")
}
stop_load() {  # name
  touch "$RUN/$1.stop"
  wait "$LOAD_PID" || die "load client failed: $(tail -5 "$RUN/$1.err")"
}

# (a) Rolling restarts.
SLOW_DRAINS=()
run_load rolling "$CUT_SHARE"
sleep 2
for round in $(seq "$ROUNDS"); do
  for i in 0 1 2; do
    n=$(wait_in_flight "r$((i + 1))" 2)
    if [[ $PRE_STOP != 0 ]]; then
      haproxy_api "set server agentd/r$((i + 1)) state drain" >/dev/null
      sleep "$PRE_STOP"
      n="$n before the ${PRE_STOP} s pause, $(in_flight "r$((i + 1))")"
    fi
    t0=$(date +%s.%N)
    kill -TERM "${REPLICA[$i]}"
    for _ in $(seq $(( DRAIN_BOUND * 10 ))); do
      kill -0 "${REPLICA[$i]}" 2>/dev/null || break
      sleep 0.1
    done
    status=0 ended=exited
    if kill -0 "${REPLICA[$i]}" 2>/dev/null; then
      SLOW_DRAINS+=("round $round r$((i + 1))")
      kill -KILL "${REPLICA[$i]}"
      { wait "${REPLICA[$i]}"; } 2>/dev/null || true
      ended="still draining, SIGKILLed"
    else
      wait "${REPLICA[$i]}" || status=$?
      ended="exited $status"
    fi
    log "round $round: r$((i + 1)) SIGTERM with $n requests in flight; $ended after $(python3 -c "print(f'{$(date +%s.%N) - $t0:.2f}')") s"
    [[ $status == 0 ]] || die "r$((i + 1)) exited $status on SIGTERM"
    start_replica "$i"
    [[ $PRE_STOP == 0 ]] || haproxy_api "set server agentd/r$((i + 1)) state ready" >/dev/null
    wait_up "$i"
    log "round $round: r$((i + 1)) up again"
  done
done
sleep 1
stop_load rolling
log "HAProxy after the restarts: $(backend_stats)"

# (b) SIGKILL one replica mid-stream, then start it again.
run_load kill "$CUT_SHARE"
sleep 1
n=$(wait_in_flight r2 3)
log "SIGKILL r2 with $n requests in flight"
kill -KILL "${REPLICA[1]}"
{ wait "${REPLICA[1]}"; } 2>/dev/null || true
sleep 1
start_replica 1
wait_up 1
sleep 2
stop_load kill
log "HAProxy after the SIGKILL (counters since the start): $(backend_stats)"

# (c) Resume: nothing disturbed, the clients cut RESUME_CUT_SHARE of the long streams.
RESUME_ARGS=()
if [[ $RESUME == 1 ]]; then
  run_load resume "$RESUME_CUT_SHARE"
  sleep "$RESUME_SECONDS"
  stop_load resume
  log "resume phase done (${RESUME_SECONDS} s of starts)"
  RESUME_ARGS=(--resume "$RUN/resume.json")
fi
log "keys in Redis (rate limit and resume store): $(redis-cli -p "$REDIS_PORT" dbsize)"
if [[ $RESUME == 1 ]]; then
  # Each process's counters since its last start (so (c) and part of (b)).
  log "resume store, the 3 replicas' counters since their last start: $(
    for p in "${PORTS[@]}"; do curl -s --max-time 2 "http://127.0.0.1:$p/metrics"; done \
      | awk '/^agentd_resume_[a-z_]+ / { sum[$1] += $2 }
             END { for (k in sum) printf "%s %d; ", substr(k, 15), sum[k] }')"
fi

if python3 "$HERE/report.py" --rolling "$RUN/rolling.json" --kill "$RUN/kill.json" --killed r2 \
    "${RESUME_ARGS[@]}" --md "$RUN/fleet.md" && [[ ${#SLOW_DRAINS[@]} == 0 ]]; then
  log "passed (run: $RUN)"
else
  [[ ${#SLOW_DRAINS[@]} == 0 ]] \
    || log "not exited ${DRAIN_BOUND} s after SIGTERM (SIGKILLed): ${SLOW_DRAINS[*]}"
  log "FAILED (run: $RUN)"
  exit 1
fi

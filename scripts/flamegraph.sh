#!/usr/bin/env bash
# scripts/flamegraph.sh: a CPU flame graph of agentd under load.
#
# Usage: scripts/flamegraph.sh [options] SCENARIO
#   SCENARIO             health (GET /health), agent (POST /agent, the echo agent's SSE) or
#                        llm (POST /agent, the LLM agent relaying 20-token answers from the
#                        in-repo fake-llm upstream, which runs beside wrk on CPU 1)
#   --server NAME        agentd (default) or hyper-ceiling (the bench peer, for comparison)
#   --duration S         seconds profiled under load (default 10)
#   --connections N      wrk connections (default 50)
#   --freq HZ            perf sampling frequency (default 999)
#   --no-build           use the profiling binary already built
#
# What it does: builds the server in release mode with debug line tables and frame
# pointers (into target/flamegraph, so the normal release build is left alone), starts
# it on 127.0.0.1 (pinned to CPU 0 and wrk to CPU 1 when there are 2+ cores), warms it up
# for 2 s, then records `perf record -F 999 -e cpu-clock -g` (the software clock, which
# works in VMs without hardware counters) on the server process while wrk loads it,
# renders flamegraphs/<scenario>.svg (flamegraphs/<server>-<scenario>.svg for a peer)
# with inferno, and appends a line saying how it was made to flamegraphs/README.md.
#
# Needs perf (apt-get install linux-perf when missing, as root), wrk (apt-get) and inferno
# (cargo install inferno when missing).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELPERS=$ROOT/scripts/bench
SERVER=agentd
DURATION=10
CONNECTIONS=50
FREQ=999
BUILD=1
SCENARIO=''
PORT=${FLAMEGRAPH_PORT:-39190}
ORIG_ARGS=$(python3 -c 'import shlex, sys; print(shlex.join(sys.argv[1:]))' "$@" 2>/dev/null || echo "$*")

usage() { sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "flamegraph: $*" >&2; exit 1; }
log() { echo "flamegraph: $*" >&2; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --server) SERVER=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --freq) FREQ=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option: $1" ;;
    *) [[ -z $SCENARIO ]] || die "one scenario at a time"; SCENARIO=$1; shift ;;
  esac
done
case $SCENARIO in
  health) METHOD=GET; URL_PATH=/health ;;
  agent) METHOD=POST; URL_PATH=/agent ;;
  llm) METHOD=POST; URL_PATH=/agent ;;
  *) usage >&2; die "SCENARIO must be health, agent or llm" ;;
esac
[[ $SCENARIO != llm || $SERVER == agentd ]] || die "the llm scenario profiles agentd only"
LLM_TOKENS=20
case $SERVER in agentd|hyper-ceiling) ;; *) die "--server must be agentd or hyper-ceiling" ;; esac
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 1 ]] || die "--duration wants whole seconds >= 1"

# ------------------------------------------------------------------------- tools
apt_install() {
  [[ $(id -u) == 0 ]] || die "$* missing; install it (apt-get install $*) or run as root"
  log "installing $* (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 || {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  }
}
export PATH=$PATH:${CARGO_HOME:-$HOME/.cargo}/bin
command -v perf >/dev/null || apt_install linux-perf
command -v perf >/dev/null || die "perf not found"
command -v wrk >/dev/null || apt_install wrk
command -v curl >/dev/null || apt_install curl
if ! command -v inferno-flamegraph >/dev/null || ! command -v inferno-collapse-perf >/dev/null; then
  log "installing inferno (cargo install inferno)"
  cargo install inferno >&2 || die "cargo install inferno failed"
fi

# ------------------------------------------------------------------------- build
PROFILE_DIR_REL=target/flamegraph
if [[ $SERVER == agentd ]]; then
  CRATE_DIR=$ROOT
  BIN=$ROOT/$PROFILE_DIR_REL/release/agentd
else
  CRATE_DIR=$ROOT/benches/peers/hyper-ceiling
  BIN=$CRATE_DIR/$PROFILE_DIR_REL/release/hyper-ceiling
fi
if [[ $BUILD == 1 ]]; then
  log "building $SERVER (release, debug line tables, frame pointers)"
  (cd "$CRATE_DIR" &&
    RUSTFLAGS="${RUSTFLAGS:-} -C force-frame-pointers=yes" \
    CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    CARGO_PROFILE_RELEASE_STRIP=none \
    cargo build --release --target-dir "$PROFILE_DIR_REL") || die "build failed"
fi
[[ -x $BIN ]] || die "$BIN not built"
FAKE_LLM=$ROOT/$PROFILE_DIR_REL/release/fake-llm
if [[ $SCENARIO == llm && ( $BUILD == 1 || ! -x $FAKE_LLM ) ]]; then
  log "building fake-llm (release)"
  (cd "$ROOT" && cargo build --release -p fake-llm --bin fake-llm --target-dir "$PROFILE_DIR_REL") ||
    die "fake-llm build failed"
fi

# ------------------------------------------------------------------------- pinning
NCPU=$(nproc)
if [[ $NCPU -ge 2 ]]; then
  SERVER_PIN=(taskset -c 0); CLIENT_PIN=(taskset -c 1); WORKERS=1; PIN_NOTE="server on CPU 0, wrk on CPU 1"
else
  SERVER_PIN=(); CLIENT_PIN=(); WORKERS=1; PIN_NOTE="no pinning (1 CPU)"
fi

# ------------------------------------------------------------------------- run
WORK=$(mktemp -d)
SERVER_PID=''
PERF_PID=''
FAKE_PID=''
cleanup() {
  local rc=$?
  [[ -n $PERF_PID ]] && kill -INT "$PERF_PID" 2>/dev/null && wait "$PERF_PID" 2>/dev/null
  [[ -n $FAKE_PID ]] && kill -TERM "$FAKE_PID" 2>/dev/null && wait "$FAKE_PID" 2>/dev/null
  if [[ -n $SERVER_PID ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/"; then
  die "port $PORT is in use (set FLAMEGRAPH_PORT)"
fi
AGENT_ENV=()
if [[ $SCENARIO == llm ]]; then
  "${CLIENT_PIN[@]}" "$FAKE_LLM" --port 0 --threads 1 --tokens "$LLM_TOKENS" > "$WORK/fake.out" 2> "$WORK/fake.log" &
  FAKE_PID=$!
  line=''
  for _ in $(seq 100); do
    line=$(head -n1 "$WORK/fake.out" 2>/dev/null || true)
    [[ -n $line ]] && break
    sleep 0.1
  done
  [[ $line == "listening on http://"* ]] || die "fake-llm did not start: $line"
  AGENT_ENV=(AGENT=llm OPENAI_API_KEY=sk-profile OPENAI_BASE_URL="${line#listening on }/v1"
    OPENAI_MODEL=fake-model HEALTH_CHECK_INTERVAL=60000 MAX_EVENT_LOOP_DELAY=0)
fi
env NODE_ENV=production PORT=$PORT HOST=127.0.0.1 WORKERS=$WORKERS "${AGENT_ENV[@]}" \
  "${SERVER_PIN[@]}" "$BIN" > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 300); do
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; die "$SERVER exited during start-up"; }
  curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/health/live" && break
  sleep 0.1
done
curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/health/live" || die "$SERVER did not come up"

wrk_env=(env BENCH_BODY_FILE=)
[[ $METHOD == POST ]] && wrk_env=(env BENCH_BODY_FILE="$HELPERS/agent-body.json")
URL=http://127.0.0.1:$PORT$URL_PATH
log "warming up (2 s)"
"${wrk_env[@]}" "${CLIENT_PIN[@]}" wrk -t1 -c "$CONNECTIONS" -d 2s -s "$HELPERS/wrk.lua" "$URL" > /dev/null

log "profiling $SERVER for ${DURATION}s under wrk -c $CONNECTIONS $METHOD $URL_PATH"
perf record -F "$FREQ" -e cpu-clock -g -p "$SERVER_PID" -o "$WORK/perf.data" -- sleep "$((DURATION + 1))" \
  > "$WORK/perf.log" 2>&1 &
PERF_PID=$!
sleep 0.5
"${wrk_env[@]}" "${CLIENT_PIN[@]}" wrk -t1 -c "$CONNECTIONS" -d "${DURATION}s" -s "$HELPERS/wrk.lua" "$URL" \
  > "$WORK/wrk.out"
wait "$PERF_PID" || { cat "$WORK/perf.log" >&2; die "perf record failed"; }
PERF_PID=''
RPS=$(python3 - "$WORK/wrk.out" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("WRKJSON "):
        r = json.loads(line[8:])
        print(f"{r['requests'] / (r['duration_us'] / 1e6):,.0f}")
EOF
)

mkdir -p "$ROOT/flamegraphs"
NAME=$SCENARIO
[[ $SERVER == agentd ]] || NAME=$SERVER-$SCENARIO
SVG=$ROOT/flamegraphs/$NAME.svg
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
log "rendering $SVG"
perf script -i "$WORK/perf.data" 2> "$WORK/perf-script.log" |
  inferno-collapse-perf > "$WORK/folded"
[[ -s $WORK/folded ]] || { cat "$WORK/perf-script.log" >&2; die "no samples recorded"; }
inferno-flamegraph --title "$SERVER: $METHOD $URL_PATH, wrk -c $CONNECTIONS, ${DURATION}s, commit $COMMIT" \
  --subtitle "perf record -F $FREQ -e cpu-clock -g; $PIN_NOTE; $RPS req/s during the profile" \
  < "$WORK/folded" > "$SVG"

README=$ROOT/flamegraphs/README.md
if [[ ! -f $README ]]; then
  cat > "$README" <<'EOF'
# Flame graphs

CPU flame graphs of agentd under load, made by `scripts/flamegraph.sh SCENARIO`
(`health`: `GET /health`; `agent`: `POST /agent`, the echo agent's SSE response; `llm`:
`POST /agent`, the LLM agent relaying 20-token answers from the in-repo fake upstream). Each
run overwrites `<scenario>.svg` and adds a line below. Open an SVG in a browser to zoom
and search.

EOF
fi
echo "- \`$NAME.svg\` ($(date -u +%Y-%m-%d)): \`scripts/flamegraph.sh $ORIG_ARGS\` at commit \`$COMMIT\`; load \`wrk -t1 -c $CONNECTIONS -d ${DURATION}s\` $METHOD $URL_PATH, $RPS req/s; \`perf record -F $FREQ -e cpu-clock -g\`; $PIN_NOTE, WORKERS=$WORKERS; $(nproc) CPU(s), $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" >> "$README"
log "wrote $SVG ($RPS req/s during the profile)"

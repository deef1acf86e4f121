#!/usr/bin/env bash
# scripts/manifests.sh: checks deploy/kubernetes/. Renders the base and every overlay
# with `kubectl kustomize`, validates each rendering against a current Kubernetes
# schema with kubernetes-validate (strict: unknown fields refused; pinned in
# scripts/manifests/requirements.txt, installed in .venv-manifests), then runs
# scripts/manifests/check.py on it: terminationGracePeriodSeconds against the preStop
# pause + SHUTDOWN_TIMEOUT + margin configured in the ConfigMap, SHUTDOWN_TIMEOUT
# against AGENT_TIMEOUT, non-root, read-only root, resources, and every probe path
# fetched from a running agentd (200 or 503, never 404).
#
# Usage: scripts/manifests.sh [--no-build] [--kubernetes-version X.Y.Z]
#   --no-build              use the release binary already built
#   --kubernetes-version V  schema version (default: kubernetes-validate's newest)
#   -h, --help              this text
# KUBECTL=PATH uses another kubectl.
# Needs kubectl (Debian's kubernetes-client, kubectl 1.20 with kustomize v2, renders
# them as well as a current one), python3 with venv. A negative control runs too: the
# checks must fail on a rendering whose grace period is too short and on a probe path
# agentd does not serve. Exit status: 0 passed, 1 a check failed, 2 set-up failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/scripts/manifests
BUILD=1 KVER=()
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "manifests: $*" >&2; exit 2; }
log() { echo "manifests: $*" >&2; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --no-build) BUILD=0; shift ;;
    --kubernetes-version) KVER=(-k "${2:?}"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
KUBECTL=${KUBECTL:-kubectl}
command -v "$KUBECTL" >/dev/null || die "kubectl not found (apt-get install -y kubernetes-client)"
# shellcheck source=lib/venv.sh
source "$ROOT/scripts/lib/venv.sh"
ensure_venv "$ROOT/.venv-manifests" "$HERE/requirements.txt" || die "venv"
if [[ $BUILD == 1 ]]; then
  (cd "$ROOT" && cargo build --release --bin agentd) || die "build failed"
fi
# shellcheck source=lib/target_dir.sh
source "$ROOT/scripts/lib/target_dir.sh"
BIN=$(cargo_target_dir "$ROOT")/release/agentd
[[ -x $BIN ]] || die "no release binary (run without --no-build)"

OUT=$ROOT/bench-out/manifests
rm -rf "$OUT"; mkdir -p "$OUT"
PID=''
trap '[[ -n $PID ]] && kill "$PID" 2>/dev/null; true' EXIT
# The probes are asked of agentd as the manifests configure it (the base ConfigMap's
# settings), on 127.0.0.1 and a free port.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
env HOST=127.0.0.1 PORT="$PORT" WORKERS=1 NODE_ENV=production "$BIN" > "$OUT/agentd.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
  curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/health/live" && break
  kill -0 "$PID" 2>/dev/null || die "agentd exited: $(tail -3 "$OUT/agentd.log")"
  sleep 0.1
done

failed=0
for dir in "$ROOT/deploy/kubernetes/base" "$ROOT"/deploy/kubernetes/overlays/*/; do
  dir=${dir%/}
  name=${dir#"$ROOT/deploy/kubernetes/"}; name=${name//\//-}
  log "== ${dir#"$ROOT/"}"
  "$KUBECTL" kustomize "$dir" > "$OUT/$name.yaml" || die "kubectl kustomize ${dir#"$ROOT/"} failed"
  "$ROOT/.venv-manifests/bin/kubernetes-validate" --strict --quiet "${KVER[@]}" "$OUT/$name.yaml" \
    || { log "FAIL: ${dir#"$ROOT/"} does not validate"; failed=1; }
  "$VPY" "$HERE/check.py" "$OUT/$name.yaml" --url "http://127.0.0.1:$PORT" || failed=1
done
# Negative controls: the checks must refuse a grace period shorter than the drain and a
# probe path agentd does not serve.
sed 's/terminationGracePeriodSeconds: .*/terminationGracePeriodSeconds: 30/' \
  "$OUT/base.yaml" > "$OUT/control-grace.yaml"
sed 's|path: /health/ready|path: /healthz|' "$OUT/base.yaml" > "$OUT/control-probe.yaml"
for control in grace probe; do
  if "$VPY" "$HERE/check.py" "$OUT/control-$control.yaml" --url "http://127.0.0.1:$PORT" \
      > "$OUT/control-$control.out" 2>&1; then
    log "FAIL: the checks passed a rendering with a bad $control"; failed=1
  else
    log "control: a bad $control is refused ($(grep '^FAIL' "$OUT/control-$control.out" | tail -1))"
  fi
done
if [[ $failed == 0 ]]; then log "passed"; else log "FAILED"; exit 1; fi

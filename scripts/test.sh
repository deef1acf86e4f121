#!/usr/bin/env bash
# The project's test command: formatting, lints, unit and integration tests, the interop
# check with the official Python client library, the outside-client suite (Chromium,
# Node, Python clients, PyJWT, promtool), and the benchmark harness end to end.
# the fleet drill's quick run (HAProxy, 3 replicas, rolling restarts, a SIGKILL, resumes), the
# image built and served, and the Kubernetes manifests rendered, validated and checked.
# SKIP_INTEROP=1, SKIP_OUTSIDE=1, SKIP_HOSTILE=1, SKIP_FUZZ=1, SKIP_SOAK=1, SKIP_BENCH=1,
# SKIP_FLEET=1 or SKIP_IMAGE=1 leave those parts out.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
step "no import cycle between the top-level modules of src/"
scripts/modules.py
step "cargo test --workspace"
cargo test --workspace
step "cargo build --release"
cargo build --release
# shellcheck source=lib/target_dir.sh
source scripts/lib/target_dir.sh
TARGET="$(cargo_target_dir)"
step "scripts find cargo's output wherever CARGO_TARGET_DIR puts it"
scripts/lib/target_dir_test.sh
if [[ ${SKIP_INTEROP:-0} != 1 ]]; then
  step "interop with the official Python client library"
  AGENTD_BIN="$TARGET/release/agentd" scripts/interop.sh
  step "proxy mode in front of the official Python reference server"
  AGENTD_BIN="$TARGET/release/agentd" scripts/proxy-interop.sh
fi
if [[ ${SKIP_OUTSIDE:-0} != 1 ]]; then
  step "outside clients: Chromium (incl. the playground), Node eventsource and ws, httpx-sse, PyJWT, promtool, OpenAI, MCP and A2A SDKs, openapi-spec-validator"
  AGENTD_BIN="$TARGET/release/agentd" scripts/outside.sh
fi
if [[ ${SKIP_HOSTILE:-0} != 1 ]]; then
  step "hostile clients: slowloris, HTTP/2 rapid reset and CONTINUATION flood"
  AGENTD_BIN="$TARGET/release/agentd" scripts/hostile.sh
fi
if [[ ${SKIP_FUZZ:-0} != 1 ]]; then
  step "fuzz targets, 20 s each on the checked-in corpus"
  scripts/fuzz.sh 20
fi
if [[ ${SKIP_SOAK:-0} != 1 ]]; then
  step "soak, quick run"
  scripts/soak.sh --quick
fi
if [[ ${SKIP_FLEET:-0} != 1 ]]; then
  step "fleet drill, quick run: HAProxy, 3 replicas, rolling restarts, a SIGKILL, resumes through Redis"
  scripts/fleet.sh --quick
fi
if [[ ${SKIP_IMAGE:-0} != 1 ]]; then
  step "image: built FROM scratch with buildah, served from its root filesystem"
  scripts/image.sh --no-build
  step "Kubernetes manifests: rendered, validated, drain and probes checked"
  scripts/manifests.sh --no-build
fi
if [[ ${SKIP_BENCH:-0} != 1 ]]; then
  step "benchmark harness, quick run"
  scripts/bench.sh --quick
  scripts/bench/proxy.sh --quick --no-build
fi
step "all checks passed"

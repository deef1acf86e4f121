# Sourced by the drills that run agentd against the fake LLM upstream (soak, fleet).
#
# release_run NAME BUILD: builds agentd and fake-llm (release) when BUILD is 1, makes
# bench-out/NAME-<time>/ (RUN), points bench-out/NAME-latest at it, and copies both
# binaries into it, so that a rebuild during the run changes nothing. Needs ROOT, and
# log and die from the caller.
release_run() {
  local name=$1 build=$2
  if [[ $build == 1 ]]; then
    log "building agentd and fake-llm (release)"
    (cd "$ROOT" && cargo build --release --bin agentd && cargo build --release -p fake-llm) \
      || die "build failed"
  fi
  RUN=$ROOT/bench-out/$name-$(date -u +%Y%m%d-%H%M%S)
  mkdir -p "$RUN"
  ln -sfn "$(basename "$RUN")" "$ROOT/bench-out/$name-latest"
  # shellcheck source=target_dir.sh
  source "$ROOT/scripts/lib/target_dir.sh"
  TARGET=$(cargo_target_dir "$ROOT")
  cp "$TARGET/release/agentd" "$TARGET/release/fake-llm" "$RUN/" \
    || die "no release binaries (run without --no-build)"
}

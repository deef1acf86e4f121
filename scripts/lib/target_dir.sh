# Sourced by scripts that run what cargo built.
#
# cargo_target_dir [CRATE_DIR]: prints where cargo puts build output for the crate in
# CRATE_DIR (default: the current directory), honouring CARGO_TARGET_DIR and
# .cargo/config.toml, so no script assumes `target/`.
cargo_target_dir() {
    (cd "${1:-.}" && cargo metadata --format-version 1 --no-deps 2>/dev/null) \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

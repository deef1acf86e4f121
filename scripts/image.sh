#!/usr/bin/env bash
# scripts/image.sh: builds agentd's image without a registry and runs it. The
# Containerfile's runtime layout (scripts/image/rootfs.sh: the stripped binary, its
# shared libraries, CA certificates, the non-root user agentd 10001:10001, no shell) is
# assembled from the host's release binary, committed FROM scratch with Debian's
# buildah (vfs storage, so it needs no overlay mounts), and exported as an OCI archive.
# Then the image is started the way a pod runs it: buildah mounts the committed image's
# root filesystem, and agentd runs chrooted in it as user 10001, on a read-only bind
# mount of it (unshare --mount), listening on 127.0.0.1, until GET /health/live answers
# 200. (No container runtime is needed: `podman run` sets rlimits, which some restricted
# hosts refuse; chroot sets none.)
#
# Prints the image size (as buildah stores it, the root filesystem, and the OCI archive
# with its one gzip-compressed layer, what a registry would hold). Output: bench-out/image/ (agentd-image.oci.tar, the run's log).
#
# Usage: scripts/image.sh [--no-build] [--keep]
#   --no-build  use the release binary already built
#   --keep      keep the image in buildah's storage (tag agentd:dev)
#   -h, --help  this text
# Needs root, buildah (apt-get install -y buildah), objcopy (binutils), curl.
# Exit status: 0 built and served, 1 it did not serve, 2 set-up failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=1 KEEP=0
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "image: $*" >&2; exit "${2:-2}"; }
log() { echo "image: $*" >&2; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --no-build) BUILD=0; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ $(id -u) == 0 ]] || die "needs root (buildah's storage, chroot)"
for tool in buildah objcopy curl unshare chroot; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y buildah binutils curl)"
done
if [[ $BUILD == 1 ]]; then
  (cd "$ROOT" && cargo build --release --bin agentd) || die "build failed"
fi
# shellcheck source=lib/target_dir.sh
source "$ROOT/scripts/lib/target_dir.sh"
BIN=$(cargo_target_dir "$ROOT")/release/agentd
[[ -x $BIN ]] || die "no release binary (run without --no-build)"

OUT=$ROOT/bench-out/image
rm -rf "$OUT"; mkdir -p "$OUT"
WORK=$(mktemp -d)
B=(buildah --storage-driver vfs)
CTR='' RUNCTR='' MNT='' PID=''
cleanup() {
  set +e
  # unshare --fork ignores SIGTERM while it waits: end agentd, its child, and unshare
  # follows.
  if [[ -n $PID ]]; then
    pkill -TERM -P "$PID" 2>/dev/null
    wait "$PID" 2>/dev/null
  fi
  [[ -n $RUNCTR ]] && { "${B[@]}" umount "$RUNCTR" >/dev/null 2>&1; "${B[@]}" rm "$RUNCTR" >/dev/null 2>&1; }
  [[ -n $CTR ]] && "${B[@]}" rm "$CTR" >/dev/null 2>&1
  [[ $KEEP == 1 ]] || "${B[@]}" rmi -f agentd:dev >/dev/null 2>&1
  rm -rf "$WORK"
  true
}
trap cleanup EXIT

log "laying out the root filesystem"
"$ROOT/scripts/image/rootfs.sh" "$BIN" "$WORK/rootfs"
log "committing it FROM scratch with buildah"
CTR=$("${B[@]}" from scratch)
"${B[@]}" copy "$CTR" "$WORK/rootfs/" / >/dev/null
"${B[@]}" config --user 10001:10001 --port 3000 --entrypoint '["/usr/local/bin/agentd"]' \
  --env HOST=0.0.0.0 --env PORT=3000 --env NODE_ENV=production \
  --label org.opencontainers.image.title=agentd "$CTR"
"${B[@]}" commit --quiet "$CTR" agentd:dev >/dev/null
"${B[@]}" push --quiet agentd:dev "oci-archive:$OUT/agentd-image.oci.tar"

ARCHIVE=$(stat -c %s "$OUT/agentd-image.oci.tar")
STORED=$("${B[@]}" images --format '{{.Size}}' agentd:dev | head -1)
RAW=$(du -sb "$WORK/rootfs" | cut -f1)
GZ=$(tar -C "$WORK/rootfs" -cf - . | gzip -6 | wc -c)
BINSZ=$(stat -c %s "$WORK/rootfs/usr/local/bin/agentd")
log "image agentd:dev: $STORED as buildah stores it; root filesystem $((RAW / 1024)) KiB (binary $((BINSZ / 1024)) KiB), $((GZ / 1024)) KiB as a gzip tar, OCI archive $((ARCHIVE / 1024)) KiB"
log "files: $(cd "$WORK/rootfs" && find . -type f | sort | tr '\n' ' ')"

# Run the committed image's root filesystem, read-only, as the non-root user.
RUNCTR=$("${B[@]}" from agentd:dev)
MNT=$("${B[@]}" mount "$RUNCTR")
[[ $("${B[@]}" inspect --format '{{.OCIv1.Config.User}}' agentd:dev) == 10001:10001 ]] \
  || die "the image's user is not 10001:10001" 1
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
unshare --mount --fork -- bash -c '
  mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" &&
  exec env -i HOST=127.0.0.1 PORT="$2" WORKERS=1 NODE_ENV=production \
    "$3" --userspec=10001:10001 "$1" /usr/local/bin/agentd' _ "$MNT" "$PORT" "$(command -v chroot)" \
  > "$OUT/run.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
  if curl -sf -o "$OUT/live.json" --max-time 1 "http://127.0.0.1:$PORT/health/live"; then
    log "GET /health/live from the image's root filesystem (read-only, user 10001): $(cat "$OUT/live.json")"
    APID=$(pgrep -P "$PID" | head -1)
    UIDS=$(awk '/^Uid:/ { print $2 }' "/proc/$APID/status")
    ROOTOPTS=$(awk '$5 == "/" { print $6 }' "/proc/$APID/mountinfo" | tail -1)
    log "agentd PID $APID: uid $UIDS, its / mounted $ROOTOPTS"
    [[ $UIDS == 10001 && $ROOTOPTS == ro,* ]] || die "not non-root on a read-only root" 1
    log "passed (OCI archive: $OUT/agentd-image.oci.tar)"
    exit 0
  fi
  kill -0 "$PID" 2>/dev/null || break
  sleep 0.1
done
cat "$OUT/run.log" >&2
die "agentd from the image did not answer /health/live" 1

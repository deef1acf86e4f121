#!/usr/bin/env bash
# scripts/image/rootfs.sh: lays out agentd's runtime root filesystem in a folder, the one
# layout both the Containerfile (in its build stage) and scripts/image.sh put in an
# image: the binary with its debug info stripped, the shared libraries it loads (from
# ldd, the dynamic loader included), CA certificates, and /etc/passwd and /etc/group
# naming the non-root user agentd (10001:10001). No shell, no package manager.
#
# Usage: scripts/image/rootfs.sh BINARY DEST
#   BINARY  a release build of agentd (target/release/agentd)
#   DEST    an empty or missing folder; written as the image's /
set -euo pipefail
[[ $# == 2 ]] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
BIN=$1 DEST=$2
[[ -x $BIN ]] || { echo "rootfs: $BIN is not an executable" >&2; exit 2; }
CA=/etc/ssl/certs/ca-certificates.crt
[[ -f $CA ]] || { echo "rootfs: $CA missing (apt-get install -y ca-certificates)" >&2; exit 2; }

mkdir -p "$DEST/usr/local/bin" "$DEST/etc/ssl/certs" "$DEST/tmp"
chmod 1777 "$DEST/tmp"
objcopy --strip-debug "$BIN" "$DEST/usr/local/bin/agentd"
# Every library the binary loads, at the path the loader looks for it (ldd prints
# "name => /path (addr)" and the loader as "/path (addr)").
ldd "$BIN" | awk '/=> \//{ print $3 } /^\t\//{ print $1 }' | sort -u | while read -r lib; do
  mkdir -p "$DEST$(dirname "$lib")"
  cp -L "$lib" "$DEST$lib"
done
cp "$CA" "$DEST/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/:/sbin/nologin\nagentd:x:10001:10001:agentd:/:/sbin/nologin\n' > "$DEST/etc/passwd"
printf 'root:x:0:\nagentd:x:10001:\n' > "$DEST/etc/group"
printf 'hosts: files dns\n' > "$DEST/etc/nsswitch.conf"

#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian 12 machine for TFS: system packages, npm dependencies
# (with the fuse-native patch), the native builds, the TypeScript build, and the commands on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'setup: %s\n' "$*" >&2; }

# libfuse2 (fuse-native's runtime), libfuse-dev + pkg-config (to build the patched fuse-native),
# fuse3 (fusermount); the rest are the real programs the tests and benchmarks drive.
packages=(libfuse2 libfuse-dev fuse3 pkg-config build-essential python3 rsync attr acl git sqlite3 tar
          bindfs stress-ng fio inotify-tools lsyncd util-linux procps psmisc openssh-client openssh-server openssl
          gnuplot-nox)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  [ "$(id -u)" = 0 ] || { say "need root for apt-get"; exit 1; }
  apt-get update -qq
  # RUNLEVEL=1: packages with a daemon (openssh-server) install without starting it; the ssh test
  # starts its own sshd on a loopback port.
  RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# sshd refuses to start without its privilege separation directory (made by its service, not run here).
[ -d /run/sshd ] || { [ "$(id -u)" = 0 ] && mkdir -p -m 0755 /run/sshd; } || true

# npm dependencies: reinstall only when the lock file or the patch changed (better-sqlite3 compiles ~2 min).
stamp=node_modules/.tfs-setup-stamp
want=$(sha256sum < package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing npm dependencies"
  # npm install, not npm ci: npm 11 leaves other platforms' optional packages out of the lock file and then ci refuses it.
  npm install --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
if [ ! -f node_modules/better-sqlite3/build/Release/better_sqlite3.node ]; then
  say "building better-sqlite3"
  npm rebuild better-sqlite3 --loglevel=error
fi

say "building"
npm run --silent build

# The commands on PATH.
bindir=$(npm prefix -g)/bin
for cmd in tfs-journal tfs-broadcast tfs-mirror tfs-inspect; do
  target=$(node -p "require('./package.json').bin['$cmd']")
  chmod +x "$target"
  ln -sf "$PWD/$target" "$bindir/$cmd"
done
say "ready: tfs-journal, tfs-broadcast, tfs-mirror, tfs-inspect are in $bindir"

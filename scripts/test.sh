#!/usr/bin/env bash
# The test command: sets up (idempotent), then runs every unit and end-to-end test on node's test runner.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ "$(id -u)" = 0 ] || { echo "test: the end-to-end tests mount FUSE filesystems and change owners: run as root" >&2; exit 1; }
mapfile -t unit < <(find dist/shared dist/journal dist/broadcast dist/mirror -name '*.test.js' | sort)
mapfile -t e2e < <(find dist/test -name '*.test.js' | sort)
# Journals started by tests put their control sockets here, not in /run/tfs.
TFS_RUNTIME_DIR=$(mktemp -d /tmp/tfs-runtime-XXXXXX)
export TFS_RUNTIME_DIR
trap 'rm -rf "$TFS_RUNTIME_DIR"' EXIT
# End-to-end files run one at a time: they mount, time kills and compare whole trees.
node --test --test-concurrency=1 --test-timeout=600000 "${unit[@]}" "${e2e[@]}"

#!/usr/bin/env bash
# The live demo: a journal over a fresh store, fanned out to two mirrors through a broadcaster,
# a short real workload on the mount, a third replica that joins late (a snapshot taken while the
# mount stays in use), and proof that every replica equals the store.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ "$(id -u)" = 0 ] || { echo "demo: run as root (FUSE mount, owners)" >&2; exit 1; }

work=$(mktemp -d /tmp/tfs-demo.XXXXXX)
store=$work/store mnt=$work/mnt sock=$work/tfs.sock
mkdir -p "$store" "$mnt" "$work/replica-a" "$work/replica-b" "$work/replica-late"
chmod 755 "$store" "$mnt" "$work/replica-a" "$work/replica-b" "$work/replica-late"
pids=()
cleanup() {
  fusermount -uz "$mnt" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "tfs-journal $store $mnt | tfs-broadcast --min-clients 2 $sock"
tfs-journal "$store" "$mnt" 2>"$work/journal.log" | tfs-broadcast --min-clients 2 "$sock" 2>"$work/broadcast.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$sock" ] && grep -q mounted "$work/journal.log" && break; sleep 0.1; done
for r in replica-a replica-b; do
  step "tfs-mirror --from $sock $work/$r"
  tfs-mirror --from "$sock" "$work/$r" 2>"$work/$r.log" &
  pids+=($!)
done

step "a workload on the mount: tar, git, sqlite3, links, renames, xattrs"
cd "$mnt"
tar -C /usr/include -cf - linux/netfilter | tar -xf -
echo "extracted $(find linux -type f | wc -l) files"
export GIT_AUTHOR_NAME=demo GIT_AUTHOR_EMAIL=demo@tfs GIT_COMMITTER_NAME=demo GIT_COMMITTER_EMAIL=demo@tfs
git init -q project && cd project
for i in 1 2 3; do echo "release $i" >> NEWS; git add NEWS; git commit -qm "release $i"; done
git log --oneline | cat
cd "$mnt"
sqlite3 app.db "PRAGMA journal_mode=wal; CREATE TABLE visits(at TEXT); INSERT INTO visits VALUES (datetime('now'));" >/dev/null
echo "database: $(sqlite3 app.db 'SELECT count(*) FROM visits') row, integrity $(sqlite3 app.db 'PRAGMA integrity_check')"
echo "draft" > report.txt && mv report.txt report-final.txt && ln report-final.txt report-link.txt
setfattr -n user.reviewed -v yes report-final.txt
touch -d '2009-03-15 10:52:01.123456789' report-final.txt
ls -la "$mnt"
cd /

step "a late replica joins the running pipeline: tfs-mirror --from $sock --bootstrap $work/replica-late"
tfs-mirror --from "$sock" --bootstrap "$work/replica-late" 2>"$work/replica-late.log" &
pids+=($!)
# It gets the whole stream when the broadcaster still holds its start, else a snapshot.
for _ in $(seq 300); do [ -e "$work/replica-late/report-link.txt" ] && break; sleep 0.1; done
echo "written after it joined" > "$mnt/after-join.txt"
cat "$work/replica-late.log"

step "unmount: the journal writes its end frame, the broadcaster delivers it, the mirrors stop"
fusermount -u "$mnt"
wait
cat "$work"/replica-a.log "$work"/replica-b.log

for r in replica-a replica-b replica-late; do
  step "rsync -aHAXc --dry-run --itemize-changes --delete store/ $r/   (no output = identical)"
  diff=$(rsync -aHAXc --dry-run --itemize-changes --delete "$store/" "$work/$r/")
  if [ -n "$diff" ]; then echo "$diff"; echo "DIFFERENT"; exit 1; fi
  echo "$r equals the store: content, modes, owners, nanosecond times, hard links, xattrs"
done
stat -c '%n  mtime %y' "$store/report-final.txt" "$work/replica-a/report-final.txt"
echo
echo "demo files are in $work"

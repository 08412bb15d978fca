import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { sh } from './harness';

/** Edge cases of names, types, modes, owners, times, xattrs, links and open files, with checks of what the mount shows. */
export function edgeCases(mnt: string): void {
  const p = (...parts: string[]) => path.join(mnt, ...parts);
  fs.mkdirSync(p('names'));
  for (const name of ['with space', 'new\nline', 'ünïcödé ✓ 日本', 'x'.repeat(255), '-dash', '.hidden']) fs.writeFileSync(p('names', name), name);

  // O_APPEND from two descriptors, a sparse file, truncation both ways.
  fs.appendFileSync(p('log'), 'one\n');
  const a1 = fs.openSync(p('log'), 'a');
  const a2 = fs.openSync(p('log'), 'a');
  fs.writeSync(a1, 'two\n');
  fs.writeSync(a2, 'three\n');
  fs.closeSync(a1);
  fs.closeSync(a2);
  assert.equal(fs.readFileSync(p('log'), 'utf8'), 'one\ntwo\nthree\n');
  const sparse = fs.openSync(p('sparse'), 'w');
  fs.writeSync(sparse, 'end', 0, 'utf8');
  fs.writeSync(sparse, 'far', 50 * 1024 * 1024, 'utf8');
  fs.closeSync(sparse);
  fs.truncateSync(p('sparse'), 60 * 1024 * 1024);
  fs.writeFileSync(p('shrink'), 'abcdefghij');
  fs.truncateSync(p('shrink'), 4);

  // Writes through a file renamed, then unlinked, while open; a hard link keeps the last name.
  const fd = fs.openSync(p('moving'), 'w');
  fs.writeSync(fd, 'first ');
  fs.renameSync(p('moving'), p('moved'));
  fs.writeSync(fd, 'second ');
  fs.linkSync(p('moved'), p('kept'));
  fs.unlinkSync(p('moved'));
  fs.writeSync(fd, 'third');
  fs.ftruncateSync(fd, 18);
  fs.closeSync(fd);
  assert.equal(fs.readFileSync(p('kept'), 'utf8'), 'first second third');
  const gone = fs.openSync(p('doomed'), 'w');
  fs.unlinkSync(p('doomed'));
  fs.writeSync(gone, 'nobody will read this');
  assert.deepEqual([fs.fstatSync(gone).nlink, fs.fstatSync(gone).size], [0, 21], 'fstat of a file unlinked while open');
  fs.closeSync(gone);

  // Hard links: link counts and attributes right through every name at once.
  fs.writeFileSync(p('h1'), 'linked');
  fs.linkSync(p('h1'), p('names', 'h2'));
  assert.equal(fs.statSync(p('h1')).nlink, 2);
  assert.equal(fs.statSync(p('names', 'h2')).nlink, 2);
  assert.equal(fs.statSync(p('h1')).ino, fs.statSync(p('names', 'h2')).ino);
  fs.appendFileSync(p('names', 'h2'), ' and grown');
  fs.chmodSync(p('names', 'h2'), 0o640);
  assert.equal(fs.statSync(p('h1')).size, 16);
  assert.equal(fs.statSync(p('h1')).mode & 0o777, 0o640);
  fs.linkSync(p('h1'), p('h3'));
  fs.unlinkSync(p('names', 'h2'));
  assert.equal(fs.statSync(p('h1')).nlink, 2);

  // Types, modes, owners, nanosecond times, xattrs.
  sh(mnt, `
    mkfifo fifo
    ln -s 'names/with space' symlink
    ln -s /nonexistent/absolute dangling
    mkdir -p sticky/sub setgid && chmod 1777 sticky && chmod 2775 setgid
    printf '#!/bin/sh\\n' > setuid && chmod 4755 setuid
    chown 1234:5678 setuid && chmod u+s setuid
    chown -h 42:43 symlink
    touch -d '2001-02-03 04:05:06.123456789' names/-dash
    touch -m -d '1999-12-31 23:59:59.999999999' log
    touch -a -d '2002-01-01 00:00:00.5' log
    setfattr -n user.color -v blue kept
    setfattr -n user.empty kept
    setfattr -n user.gone -v x kept && setfattr -x user.gone kept
    echo data > sticky/sub/f && touch -d '2010-10-10 10:10:10.101010101' sticky/sub sticky
  `);
  const log = fs.statSync(p('log'), { bigint: true });
  assert.equal(log.mtimeNs % 1_000_000_000n, 999_999_999n, 'mtime to the nanosecond; setting atime alone kept it');
  assert.equal(log.atimeNs % 1_000_000_000n, 500_000_000n);
  assert.equal(fs.statSync(p('setuid')).mode & 0o7777, 0o4755);
  assert.equal(fs.statSync(p('setuid')).uid, 1234);
  assert.equal(fs.lstatSync(p('symlink')).uid, 42);
  assert.equal(fs.statSync(p('setgid')).mode & 0o7777, 0o2775);

  // fallocate: preallocation, a punched hole (the file gets sparser), a zeroed range.
  sh(mnt, `head -c 262144 /dev/urandom > holes && fallocate -l 1M prealloc && fallocate -n -o 1M -l 1M prealloc`);
  const before = fs.statSync(p('holes')).blocks;
  sh(mnt, `fallocate -p -o 4096 -l 65536 holes && fallocate -z -o 100000 -l 5000 holes`);
  assert.ok(fs.statSync(p('holes')).blocks < before, 'punching a hole frees blocks');
  assert.ok(fs.readFileSync(p('holes')).subarray(4096, 4096 + 65536).equals(Buffer.alloc(65536)));
  assert.equal(fs.statSync(p('prealloc')).size, 1024 * 1024);

  // mmap writes through a shared mapping.
  sh(mnt, `python3 - <<'PY'
import mmap, os
fd = os.open('mapped', os.O_RDWR | os.O_CREAT, 0o644)
os.ftruncate(fd, 1 << 20)
m = mmap.mmap(fd, 1 << 20)
for i in range(0, 1 << 20, 4096):
    m[i:i+8] = b'page%04d' % (i // 4096)
m.flush(); m.close(); os.close(fd)
PY`);
  assert.equal(fs.readFileSync(p('mapped')).subarray(4096 * 7, 4096 * 7 + 8).toString(), 'page0007');
}

/** A tar archive of a real tree, extracted on the mount, checked against the archive. */
export function tarExtract(mnt: string, archive: string): void {
  sh(mnt, `mkdir untarred && tar -C untarred -xpf '${archive}' && tar -C untarred -df '${archive}'`);
}

/** Builds the archive tarExtract uses from a system tree (headers: thousands of small files). */
export function makeArchive(dest: string): string {
  const archive = path.join(dest, 'tree.tar');
  sh(dest, `tar -C /usr/include -cf '${archive}' linux asm-generic`);
  return archive;
}

/** git: commits, a branch, a merge, gc and fsck. */
export function gitWork(mnt: string): void {
  sh(mnt, `
    export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t
    git init -q repo && cd repo
    for i in $(seq 1 20); do echo "line $i" >> file.txt; seq $i > "n$((i % 5))"; git add -A; git commit -qm "commit $i"; done
    git checkout -qb side && echo side > side.txt && git add side.txt && git commit -qm side
    git checkout -q - && git merge -q --no-ff --no-edit side
    git gc -q --aggressive && git fsck --full --strict 2>&1
    test "$(git rev-list --count HEAD)" = 22
  `);
}

/** sqlite3 in rollback-journal and WAL modes, with an integrity check. */
export function sqliteWork(mnt: string): void {
  for (const mode of ['delete', 'wal']) {
    const out = sh(mnt, `
      sqlite3 ${mode}.db "PRAGMA journal_mode=${mode};" "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT);" >/dev/null
      for i in $(seq 1 20); do
        sqlite3 ${mode}.db "BEGIN; INSERT INTO t(v) SELECT hex(randomblob(200)) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<50) SELECT x FROM c); COMMIT;"
      done
      sqlite3 ${mode}.db "DELETE FROM t WHERE k % 3 = 0; VACUUM;" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
      sqlite3 ${mode}.db "PRAGMA integrity_check; SELECT count(*) FROM t;"
    `);
    assert.equal(out.trim(), 'ok\n667');
  }
}

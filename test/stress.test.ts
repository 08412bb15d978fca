import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { BIN, dirs, exitOf, startPipeline, tempDir, treeDiff, unmount } from './harness';

// stress-ng's file stressors, each verifying what it reads back; a few at a time, so that every
// one of them gets real work through the mount's single journal thread.
const GROUPS = [
  ['hdd', 'seek', 'io', 'msync', 'mmap'],
  ['dir', 'link', 'symlink', 'rename', 'dentry', 'dirdeep'],
  ['fstat', 'lockf', 'open', 'chmod', 'chown', 'utime'],
  ['sync-file', 'fallocate', 'xattr', 'readahead', 'copy-file'],
];

test(`stress-ng --verify (${GROUPS.flat().length} file stressors) on the mount; the replica equals the store`, { timeout: 240_000 }, async (t) => {
  const base = tempDir(t, 'stress');
  const [store, mnt, replica] = dirs(base, 'store', 'mnt', 'replica');
  const { journal, reader: mirror } = await startPipeline(t, store!, mnt!, process.execPath, [BIN.mirror, '--quiet', replica!]);
  const seconds = process.env['TFS_STRESS_SECONDS'] ?? '4';
  for (const group of GROUPS) {
    const args = ['--temp-path', mnt!, '--verify', '--timeout', `${seconds}s`, '--hdd-bytes', '16M', '--seek-size', '16M', '--sync-file-bytes', '8M', '--fallocate-bytes', '8M', '--readahead-bytes', '8M', '--mmap-file', '--mmap-bytes', '8M'];
    for (const s of group) args.push(`--${s}`, '1');
    const run = spawnSync('stress-ng', args, { encoding: 'utf8' });
    const out = run.stdout + run.stderr;
    assert.equal(run.status, 0, out);
    assert.match(out, /successful run completed/, out);
    assert.doesNotMatch(out, /unsuccessful|fail:/, out);
    t.diagnostic(`${group.join(', ')}: ok`);
  }
  unmount(mnt!);
  assert.equal(await exitOf(journal, 120_000), 0, journal.stderr());
  assert.equal(await exitOf(mirror, 120_000), 0, mirror.stderr());
  assert.equal(treeDiff(store!, replica!), '');
});

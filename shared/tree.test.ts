import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { S_IFLNK, Tree, fileType } from './tree';

function tempTree(t: { after: (fn: () => void) => void }, confined: boolean): { dir: string; root: string; outside: string; tree: Tree } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfs-tree-'));
  const root = path.join(dir, 'root');
  const outside = path.join(dir, 'outside');
  fs.mkdirSync(root);
  fs.mkdirSync(outside);
  fs.writeFileSync(path.join(outside, 'secret'), 'secret');
  const tree = new Tree(root, confined);
  t.after(() => {
    tree.close();
    // rm walks with *at calls: fs.rmSync cannot remove paths longer than PATH_MAX.
    execFileSync('rm', ['-rf', '--one-file-system', dir]);
  });
  return { dir, root, outside, tree };
}

/** A chain of directories whose relative path is exactly `bytes` long, ending in a file name. */
function longPath(bytes: number): { dirs: string[]; file: string } {
  const dirs: string[] = [];
  let rel = '';
  while (Buffer.byteLength(rel) + 1 + 255 < bytes - 10) {
    rel = rel === '' ? 'd'.repeat(200) : `${rel}/${'d'.repeat(200)}`;
    dirs.push(rel);
  }
  const rest = bytes - Buffer.byteLength(rel) - 1;
  return { dirs, file: `${rel}/${'f'.repeat(rest)}` };
}

test('a path of PATH_MAX-1 bytes works below a root that is itself deep', (t) => {
  for (const confined of [false, true]) {
    const { root, tree } = tempTree(t, confined);
    // A root whose own path is long: the entry path must never be prefixed with it.
    const deepRoot = path.join(root, 'r'.repeat(250), 'r'.repeat(250));
    fs.mkdirSync(deepRoot, { recursive: true });
    const deep = new Tree(deepRoot, confined);
    t.after(() => deep.close());
    const { dirs, file } = longPath(4095);
    assert.equal(Buffer.byteLength(file), 4095);
    for (const d of dirs) deep.mkdir(d, 0o755);
    const fd = deep.open(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
    fs.writeSync(fd, 'long');
    fs.closeSync(fd);
    assert.equal(deep.lstat(file).size, 4);
    deep.lutimens(file, 1_000_000_123n, 2_000_000_456n);
    assert.equal(deep.lstat(file).mtimeNs, 2_000_000_456n);
    deep.setxattr(file, 'user.k', Buffer.from('v'), 0);
    assert.deepEqual(deep.listxattr(file), ['user.k']);
    deep.rename(file, `${dirs[0]}/short`);
    assert.equal(deep.lstat(`${dirs[0]}/short`).size, 4);
    assert.ok(tree.readdir('').length === 1);
  }
});

test('confined: a symlink anywhere on the way, or at the end, fails with ELOOP and nothing outside changes', (t) => {
  const { root, outside, tree } = tempTree(t, true);
  fs.symlinkSync(outside, path.join(root, 'link'));
  fs.symlinkSync(path.join(outside, 'secret'), path.join(root, 'final'));
  fs.mkdirSync(path.join(root, 'd'));
  fs.symlinkSync('..', path.join(root, 'd', 'up'));
  const loop = (fn: () => unknown) => assert.throws(fn, (e: NodeJS.ErrnoException) => e.code === 'ELOOP' || e.code === 'EXDEV');
  loop(() => tree.open('link/secret', fs.constants.O_WRONLY | fs.constants.O_TRUNC));
  loop(() => tree.open('final', fs.constants.O_WRONLY | fs.constants.O_TRUNC));
  loop(() => tree.open('link/new', fs.constants.O_WRONLY | fs.constants.O_CREAT, 0o644));
  loop(() => tree.mkdir('link/x', 0o755));
  loop(() => tree.unlink('link/secret'));
  loop(() => tree.rename('link/secret', 'stolen'));
  loop(() => tree.link('link/secret', 'stolen'));
  loop(() => tree.lutimens('link/secret', 0n, 0n));
  loop(() => tree.setxattr('link/secret', 'user.x', Buffer.from('x'), 0));
  loop(() => tree.lstat('d/up/outside/secret'));
  // The final symlink itself is what these act on, never its target.
  assert.throws(() => tree.chmod('final', 0o777), /EOPNOTSUPP/);
  tree.lutimens('final', 5n, 6n);
  assert.equal(tree.lstat('final').mtimeNs, 6n);
  assert.equal(fileType(tree.lstat('final').mode), S_IFLNK);
  tree.unlink('final');
  assert.equal(fs.readFileSync(path.join(outside, 'secret'), 'utf8'), 'secret');
  assert.deepEqual(fs.readdirSync(outside), ['secret']);
});

test('unconfined: a final symlink is never followed by chmod, chown, utimens or xattr calls', (t) => {
  const { root, outside, tree } = tempTree(t, false);
  fs.symlinkSync(path.join(outside, 'secret'), path.join(root, 'final'));
  const before = fs.statSync(path.join(outside, 'secret'));
  assert.throws(() => tree.chmod('final', 0o777), /EOPNOTSUPP/);
  tree.lchown('final', 1234, 1234);
  tree.lutimens('final', 5n, 6n);
  assert.throws(() => tree.open('final', fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW), /ELOOP/);
  const after = fs.statSync(path.join(outside, 'secret'));
  assert.deepEqual([after.mode, after.uid, after.mtimeMs], [before.mode, before.uid, before.mtimeMs]);
  assert.equal(fs.lstatSync(path.join(root, 'final')).uid, 1234);
});

test("'' is the root itself", (t) => {
  const { root, tree } = tempTree(t, true);
  tree.chmod('', 0o750);
  tree.lutimens('', 7n, 8n);
  tree.setxattr('', 'user.root', Buffer.from('yes'), 0);
  const st = fs.statSync(root, { bigint: true });
  assert.equal(Number(st.mode) & 0o7777, 0o750);
  assert.equal(st.mtimeNs, 8n);
  assert.equal(tree.getxattr('', 'user.root').toString(), 'yes');
  assert.equal(tree.lstat('').ino, st.ino);
});

test('walk: every entry with its lstat, parents first, symlinks not followed; what vanishes meanwhile is not an error', (t) => {
  const { root, outside, tree } = tempTree(t, true);
  fs.mkdirSync(path.join(root, 'd/e'), { recursive: true });
  fs.writeFileSync(path.join(root, 'd/e/f'), 'x');
  fs.symlinkSync(outside, path.join(root, 'l'));
  const seen = [...tree.walk('')].map(([p, st]) => `${p}:${fileType(st.mode) === S_IFLNK ? 'link' : ''}`);
  assert.deepEqual(seen.map((s) => s.split(':')[0]).sort(), ['', 'd', 'd/e', 'd/e/f', 'l']);
  const order = seen.map((s) => s.split(':')[0]);
  assert.ok(order.indexOf('d') < order.indexOf('d/e') && order.indexOf('d/e') < order.indexOf('d/e/f'), 'parents first');
  assert.ok(!order.some((p) => p.startsWith('l/')), 'the symlink to outside is not followed');
  const walking = tree.walk('d');
  assert.equal(walking.next().value![0], 'd');
  fs.rmSync(path.join(root, 'd/e'), { recursive: true });
  assert.equal(walking.next().done, true, 'd/e vanished: nothing more, no error');
  assert.deepEqual([...tree.walk('gone')], []);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pathProblem, fromFusePath, parentOf } from './paths';

test('hostile paths are refused with the reason', () => {
  assert.match(pathProblem('/etc/passwd')!, /absolute/);
  assert.match(pathProblem('a/../../x')!, /'\.\.'/);
  assert.match(pathProblem('..')!, /'\.\.'/);
  assert.match(pathProblem('a/./b')!, /'\.'/);
  assert.match(pathProblem('a//b')!, /empty/);
  assert.match(pathProblem('a/')!, /empty/);
  assert.match(pathProblem('a\0b')!, /NUL/);
  assert.match(pathProblem('x'.repeat(256))!, /255/);
  assert.match(pathProblem(('y'.repeat(200) + '/').repeat(21) + 'z')!, /4095/);
});

test('ordinary names pass, including spaces, newlines, UTF-8 and 255 bytes', () => {
  for (const p of ['', 'a', 'a b/c\nd', 'ünï/cödé/日本', 'x'.repeat(255), '.hidden/..dots', 'a/...']) assert.equal(pathProblem(p), undefined, p);
});

test('FUSE paths map to frame paths, and parents are found', () => {
  assert.equal(fromFusePath('/'), '');
  assert.equal(fromFusePath('/a/b'), 'a/b');
  assert.equal(parentOf('a/b/c'), 'a/b');
  assert.equal(parentOf('a'), '');
});

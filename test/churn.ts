// A program that keeps changing a tree until told to stop: `node churn.js DIR SEED STOPFILE`.
// Every call must succeed; the first failure is printed and the program exits 1. It prints the
// number of operations it made. Used by the end-to-end tests as "the programs on the mount".
import fs from 'node:fs';
import path from 'node:path';

const [dir, seedArg, stopFile] = process.argv.slice(2) as [string, string, string];
let seed = Number(seedArg) >>> 0 || 1;
/** xorshift32: the same seed makes the same operations. */
function rand(n: number): number {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) % n;
}

const files: string[] = [];
const dirs: string[] = [''];
let counter = 0;
const p = (rel: string) => path.join(dir, rel);
const pick = <T>(a: T[]): T | undefined => (a.length === 0 ? undefined : a[rand(a.length)]);
const fresh = (prefix: string) => {
  const parent = pick(dirs)!;
  return parent === '' ? `${prefix}${counter++}` : `${parent}/${prefix}${counter++}`;
};

/** Renames a directory (and what the lists know under it). */
function moveDir(from: string, to: string): void {
  fs.renameSync(p(from), p(to));
  const move = (x: string) => (x === from || x.startsWith(from + '/') ? to + x.slice(from.length) : x);
  for (let i = 0; i < dirs.length; i++) dirs[i] = move(dirs[i]!);
  for (let i = 0; i < files.length; i++) files[i] = move(files[i]!);
}

// A tree that is already there (made by an earlier run) is taken up: its files and directories.
fs.mkdirSync(dir, { recursive: true });
(function scan(rel: string): void {
  for (const e of fs.readdirSync(p(rel), { withFileTypes: true })) {
    const child = rel === '' ? e.name : `${rel}/${e.name}`;
    counter = Math.max(counter, Number(/\d+$/.exec(e.name)?.[0] ?? 0) + 1);
    if (e.isDirectory()) {
      dirs.push(child);
      scan(child);
    } else if (e.isFile()) files.push(child);
  }
})('');
let ops = 0;
// A file kept open for the whole run, written through while it is renamed, moved and linked.
const kept = fresh('k');
const keptFd = fs.openSync(p(kept), 'w+');
files.push(kept);
try {
  while (!fs.existsSync(stopFile)) {
    const file = pick(files);
    switch (rand(17)) {
      case 0:
      case 1: {
        const f = fresh('f');
        fs.writeFileSync(p(f), Buffer.alloc(rand(20_000), rand(256)));
        files.push(f);
        break;
      }
      case 2:
      case 3:
        if (file) fs.appendFileSync(p(file), `line ${ops}\n`.repeat(rand(50) + 1));
        break;
      case 4:
        if (file) {
          const fd = fs.openSync(p(file), 'r+');
          fs.writeSync(fd, Buffer.alloc(rand(9000) + 1, rand(256)), 0, undefined, rand(30_000));
          fs.closeSync(fd);
        }
        break;
      case 5:
        if (file) fs.truncateSync(p(file), rand(10_000));
        break;
      case 6:
        if (file) {
          const to = fresh('r');
          fs.renameSync(p(file), p(to));
          files[files.indexOf(file)] = to;
        }
        break;
      case 7:
        if (file && files.length > 20) {
          fs.unlinkSync(p(file));
          files.splice(files.indexOf(file), 1);
        }
        break;
      case 8:
        if (dirs.length < 20) {
          const d = fresh('d');
          fs.mkdirSync(p(d));
          dirs.push(d);
        }
        break;
      case 9:
        if (file) {
          const l = fresh('l');
          fs.linkSync(p(file), p(l));
          files.push(l);
        }
        break;
      case 10:
        if (file) fs.chmodSync(p(file), [0o644, 0o600, 0o755][rand(3)]!);
        break;
      case 11: {
        const s = fresh('s');
        fs.symlinkSync(file ?? 'nowhere', p(s));
        break;
      }
      case 12:
        // What a careful program does: write, fsync, then rename over the old version.
        if (file) {
          const tmp = fresh('t');
          const fd = fs.openSync(p(tmp), 'w');
          fs.writeSync(fd, `version ${ops}\n`.repeat(rand(100) + 1));
          fs.fsyncSync(fd);
          fs.closeSync(fd);
          fs.renameSync(p(tmp), p(file));
        }
        break;
      case 14: {
        // A directory moves elsewhere in the tree (never into itself).
        const d = pick(dirs.filter((x) => x !== ''));
        if (d) {
          const parents = dirs.filter((x) => x !== d && !x.startsWith(d + '/'));
          const parent = pick(parents)!;
          moveDir(d, parent === '' ? `d${counter++}` : `${parent}/d${counter++}`);
        }
        break;
      }
      case 15:
      case 16:
        fs.writeSync(keptFd, `kept ${ops}\n`, rand(5000));
        break;
      case 13:
        if (file && files.length > 20) {
          const other = pick(files)!;
          if (other !== file) {
            fs.renameSync(p(file), p(other));
            files.splice(files.indexOf(file), 1);
          }
        }
        break;
    }
    ops++;
  }
} catch (err) {
  process.stderr.write(`churn: operation ${ops} failed: ${(err as Error).stack}\n`);
  process.exit(1);
}
fs.closeSync(keptFd);
process.stdout.write(`${ops}\n`);

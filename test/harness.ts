import { ChildProcess, execFileSync, spawn, SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import type { Stream } from 'node:stream';
import { mountPoints } from '../journal/mount';

/** The built commands (tests drive the real processes). */
export const BIN = {
  journal: path.join(__dirname, '..', 'journal', 'main.js'),
  broadcast: path.join(__dirname, '..', 'broadcast', 'main.js'),
  mirror: path.join(__dirname, '..', 'mirror', 'main.js'),
  inspect: path.join(__dirname, '..', 'mirror', 'inspect-main.js'),
} as const;

const started = new Map<TestContext, ChildProcess[]>();

// Journals started by a test keep their control sockets in a directory of the test run, never in
// /run/tfs (scripts/test.sh sets one for the whole run; a test file run by hand gets its own).
if (process.env['TFS_RUNTIME_DIR'] === undefined) {
  const runtime = fs.mkdtempSync(path.join(os.tmpdir(), 'tfs-runtime-'));
  process.env['TFS_RUNTIME_DIR'] = runtime;
  process.on('exit', () => fs.rmSync(runtime, { recursive: true, force: true }));
}

// If this test process ends abnormally (a timeout, an uncaught error), its children go with it: a
// journal whose reader died would otherwise keep serving its mount forever, by design.
process.on('exit', () => {
  for (const children of started.values()) for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

/**
 * A temporary directory for one test. When the test ends, however it ends, the processes the test
 * started are killed (by pid), every mount below the directory is removed, then the directory.
 */
export function tempDir(t: TestContext, name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `tfs-${name}-`));
  t.after(() => {
    for (const child of started.get(t) ?? []) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    started.delete(t);
    for (const mnt of mountsBelow(dir)) unmount(mnt);
    // rm walks with *at calls (paths longer than PATH_MAX), and never crosses into a mount left behind.
    execFileSync('rm', ['-rf', '--one-file-system', dir]);
  });
  return dir;
}

function mountsBelow(dir: string): string[] {
  return mountPoints().filter((m) => m.startsWith(dir + '/'));
}

/** Makes directories with one mode so that their roots compare equal. */
export function dirs(base: string, ...names: string[]): string[] {
  return names.map((n) => {
    const p = path.join(base, n);
    fs.mkdirSync(p, { recursive: true });
    fs.chmodSync(p, 0o755);
    return p;
  });
}

export interface Proc {
  child: ChildProcess;
  stderr: () => string;
  /** Resolves with the exit code (or the signal's name). */
  exited: Promise<number | string>;
}

/** Starts a process that is killed (by pid) when the test ends, whatever happens. */
export function start(t: TestContext, command: string, args: string[], options: SpawnOptions = {}): Proc {
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'], ...options });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  started.set(t, [...(started.get(t) ?? []), child]);
  return { child, stderr: () => err, exited };
}

/** Starts tfs-journal STORE MNT (MNT inside a tempDir); resolves once it says the mount is up. */
export async function startJournal(t: TestContext, store: string, mnt: string, stdout: number | Stream, extra: string[] = []): Promise<Proc> {
  const proc = start(t, process.execPath, [BIN.journal, ...extra, store, mnt], { stdio: ['ignore', stdout, 'pipe'] });
  await waitFor(() => /mounted /.test(proc.stderr()) || proc.child.exitCode !== null, 10_000, `mount of ${mnt}`);
  if (proc.child.exitCode !== null) throw new Error(`tfs-journal did not mount: ${proc.stderr()}`);
  return proc;
}

/**
 * `tfs-journal STORE MNT | command args`, through a real pipe (a FIFO in `dir`), as a shell makes
 * it: the journal's stdout is the pipe's write end and the reader's stdin its read end; each
 * process holds the only copy of its end, so each sees the other go away.
 */
export async function startPipeline(t: TestContext, store: string, mnt: string, command: string, args: string[], journalArgs: string[] = []): Promise<{ journal: Proc; reader: Proc }> {
  const fifo = path.join(path.dirname(mnt), `.pipe-${path.basename(mnt)}`);
  execFileSync('mkfifo', [fifo]);
  const readEnd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const writeEnd = fs.openSync(fifo, fs.constants.O_WRONLY);
  // The reader gets a blocking read end, as from a shell.
  const blocking = fs.openSync(`/proc/self/fd/${readEnd}`, fs.constants.O_RDONLY);
  fs.closeSync(readEnd);
  fs.unlinkSync(fifo);
  const reader = start(t, command, args, { stdio: [blocking, 'ignore', 'pipe'] });
  fs.closeSync(blocking);
  try {
    return { journal: await startJournal(t, store, mnt, writeEnd, journalArgs), reader };
  } finally {
    fs.closeSync(writeEnd);
  }
}

export function isMounted(mnt: string): boolean {
  return mountPoints().includes(path.resolve(mnt));
}

/** Lazily unmounts (fusermount -uz for FUSE, umount -l for the rest), ignoring a mount that is already gone. */
export function unmount(mnt: string): void {
  if (!isMounted(mnt)) return;
  try {
    execFileSync('fusermount', ['-uz', mnt], { stdio: 'ignore' });
  } catch {
    // not FUSE (a tmpfs of a test), or raced with the journal's own unmount
    try {
      if (isMounted(mnt)) execFileSync('umount', ['-l', mnt], { stdio: 'ignore' });
    } catch {
      // gone meanwhile
    }
  }
}

/** Mounts a tmpfs of `size` (e.g. '2m') at `dir` (inside a tempDir, which unmounts it). */
export function smallDisk(dir: string, size: string): void {
  fs.mkdirSync(dir, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tfs-test', dir]);
}

export async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Waits for a process to exit, failing the test if it takes longer than `ms`. */
export async function exitOf(proc: Proc, ms = 60_000): Promise<number | string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`process did not exit within ${ms} ms; stderr: ${proc.stderr()}`)), ms)));
  try {
    return await Promise.race([proc.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** rsync's itemized differences from `a` to `b` (content by checksum, hard links, ACLs, xattrs, times): '' when equal. */
export function treeDiff(a: string, b: string): string {
  // Run inside `b`: rsync then names its entries relatively (paths of PATH_MAX-1 bytes below a deep `b`).
  return execFileSync('rsync', ['-aHAXc', '--dry-run', '--itemize-changes', '--delete', `${path.resolve(a)}/`, './'], { encoding: 'utf8', cwd: b });
}

/** Runs a shell command in `cwd`, failing with its output. */
export function sh(cwd: string, script: string, env: NodeJS.ProcessEnv = {}): string {
  try {
    return execFileSync('bash', ['-euo', 'pipefail', '-c', script], { cwd, encoding: 'utf8', env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { status: number; stdout: string; stderr: string };
    throw new Error(`shell exited ${e.status}: ${script.trim().slice(0, 200)}\n--- stdout\n${e.stdout}\n--- stderr\n${e.stderr}`);
  }
}

/** xorshift32: the test's own choices, from a seed (printed by the tests that take one). */
export function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

/** A free TCP port on loopback (taken by the kernel, then released for the server under test). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

// npm run bench: TFS against a plain directory and bindfs (a C passthrough that journals nothing),
// every figure repeated (median and spread) in one run, on this machine, with the disk's own speed.
// Writes results.json, results.md and chart.png to TFS_BENCH_OUT (default scripts/bench-latest/).
import { execFileSync, spawn, ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { FrameEncoder } from '../shared/encoder';
import { FrameDecoder } from '../shared/decoder';
import { FrameType, MAGIC, PROTOCOL_VERSION } from '../shared/frame';
import { OpInput, Times, opMeta } from '../shared/ops';
import { Worker } from 'node:worker_threads';
import { mountPoints } from '../journal/mount';
import { helloFrame } from '../mirror/source';

const root = path.join(__dirname, '..');
const bin = (p: string) => path.join(root, p);
const MiB = 1024 * 1024;
const env = (name: string, dflt: number) => Number(process.env[name] ?? dflt);
const size = env('TFS_BENCH_MIB', 1024);
const files = env('TFS_BENCH_FILES', 10000);
const reps = env('TFS_BENCH_REPS', 3);
const fanMiB = env('TFS_BENCH_FANOUT_MIB', 256);
const fioSeconds = env('TFS_BENCH_FIO_SECONDS', 2);
const benchStart = Date.now();
const elapsed = () => `${((Date.now() - benchStart) / 1000).toFixed(0)} s`;
const outDir = process.env['TFS_BENCH_OUT'] ?? path.join(root, '..', 'scripts', 'bench-latest');

function seconds(f: () => unknown): number {
  const t = process.hrtime.bigint();
  f();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

const sh = (script: string) => execFileSync('bash', ['-c', script], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
const q = (p: string) => `'${p.replace(/'/g, `'\\''`)}'`;

function dd(target: string, mib = size): number {
  return seconds(() => execFileSync('dd', ['if=/dev/zero', `of=${target}`, 'bs=1M', `count=${mib}`, 'conv=fsync'], { stdio: 'ignore' }));
}

/** The disk's own sequential write speed, without the page cache (fio, O_DIRECT), in MiB/s. */
function diskSpeed(dir: string): number {
  const out = execFileSync('fio', ['--name=disk', `--filename=${path.join(dir, 'disk.bin')}`, '--rw=write', '--bs=1M', `--size=${size}M`, '--direct=1', '--ioengine=psync', '--output-format=json'], { encoding: 'utf8' });
  fs.rmSync(path.join(dir, 'disk.bin'));
  return (JSON.parse(out) as { jobs: { write: { bw: number } }[] }).jobs[0]!.write.bw / 1024;
}

async function waitMounted(mnt: string): Promise<void> {
  for (let i = 0; i < 400 && !mountPoints().includes(mnt); i++) await new Promise((r) => setTimeout(r, 25));
  if (!mountPoints().includes(mnt)) throw new Error(`${mnt} did not mount`);
}

function peakRss(pid: number | undefined): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Peak RSS of a running process, polled (VmHWM is only readable while it runs). */
function rssWatcher(pid: number | undefined): { stop: () => number } {
  let peak = 0;
  const timer = setInterval(() => (peak = Math.max(peak, peakRss(pid) || 0)), 100);
  return {
    stop: () => {
      clearInterval(timer);
      return Math.max(peak, peakRss(pid) || 0);
    },
  };
}

async function exit(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  await new Promise((r) => p.on('exit', r));
}

async function waitFile(file: string): Promise<void> {
  for (let i = 0; i < 400 && !fs.existsSync(file); i++) await new Promise((r) => setTimeout(r, 25));
}

/** Directories made under `base`. */
function made(base: string, ...names: string[]): string[] {
  return names.map((n) => {
    const d = path.join(base, n);
    fs.mkdirSync(d, { recursive: true });
    return d;
  });
}

// ---- Targets: where a workload runs ----

interface Up {
  /** The directory the workload uses. */
  dir: string;
  /** Where the changes land in the end (a replica), for lag. */
  replica?: string;
  /** Unmounts and stops; resolves with the peak RSS (MiB) of each TFS process. */
  down(): Promise<Record<string, number>>;
}

interface Target {
  key: string;
  label: string;
  /** Fewer repetitions than the rest (a slow reference). */
  reps?: number;
  up(base: string): Promise<Up>;
}

const plain: Target = {
  key: 'plain',
  label: 'plain directory',
  up: async (base) => {
    const dir = path.join(base, 'plain');
    fs.mkdirSync(dir, { recursive: true });
    return { dir, down: async () => ({}) };
  },
};

function bindfs(key: string, label: string, opts: string[]): Target {
  return {
    key,
    label,
    up: async (base) => {
      const [store, mnt] = made(base, 'bstore', 'bmnt');
      const p = spawn('bindfs', ['-f', ...opts, store!, mnt!], { stdio: 'ignore' });
      await waitMounted(mnt!);
      return {
        dir: mnt!,
        down: async () => {
          execFileSync('fusermount', ['-u', mnt!]);
          await exit(p);
          return {};
        },
      };
    },
  };
}

/** `tfs-journal STORE MNT > /dev/null`, or `| tfs-mirror REPLICA` with the replica under `replicaRoot`. */
function journal(key: string, label: string, replicaRoot: 'none' | 'disk' | 'tmpfs'): Target {
  return {
    key,
    label,
    up: async (base) => {
      const [store, mnt] = made(base, 'store', 'mnt');
      const replica = replicaRoot === 'none' ? undefined : path.join(replicaRoot === 'tmpfs' ? fs.mkdtempSync('/dev/shm/tfs-bench-') : base, 'replica');
      const mirror = replica ? spawn(process.execPath, [bin('mirror/main.js'), '--quiet', replica], { stdio: ['pipe', 'ignore', 'ignore'] }) : undefined;
      const out = mirror ? mirror.stdin! : fs.openSync('/dev/null', 'w');
      const j = spawn(process.execPath, [bin('journal/main.js'), store!, mnt!], { stdio: ['ignore', out, 'ignore'] });
      if (mirror) mirror.stdin!.destroy();
      else fs.closeSync(out as number);
      await waitMounted(mnt!);
      const watch = { journal: rssWatcher(j.pid), ...(mirror ? { mirror: rssWatcher(mirror.pid) } : {}) };
      return {
        dir: mnt!,
        replica,
        down: async () => {
          const rss = Object.fromEntries(Object.entries(watch).map(([k, w]) => [k, w.stop()]));
          execFileSync('fusermount', ['-u', mnt!]);
          await exit(j);
          if (mirror) await exit(mirror);
          if (replica && replicaRoot === 'tmpfs') fs.rmSync(path.dirname(replica), { recursive: true, force: true });
          return rss;
        },
      };
    },
  };
}

/** `tfs-journal [--spool D] | tfs-broadcast [--log D] S` and `mirrors` tfs-mirror --from S (replicas on tmpfs). */
function broadcast(key: string, label: string, mirrors: number, spool: boolean): Target {
  return {
    key,
    label,
    up: async (base) => {
      const [store, mnt] = made(base, 'store', 'mnt');
      const sock = path.join(base, 'sock');
      const log = path.join(base, 'spool');
      const shm = fs.mkdtempSync('/dev/shm/tfs-bench-');
      const b = spawn(process.execPath, [bin('broadcast/main.js'), '--min-clients', String(mirrors), ...(spool ? ['--log', log] : []), sock], { stdio: ['pipe', 'ignore', 'ignore'] });
      const j = spawn(process.execPath, [bin('journal/main.js'), ...(spool ? ['--spool', log] : []), store!, mnt!], { stdio: ['ignore', b.stdin!, 'ignore'] });
      b.stdin!.destroy();
      await waitMounted(mnt!);
      await waitFile(sock);
      const ms = Array.from({ length: mirrors }, (_, i) => spawn(process.execPath, [bin('mirror/main.js'), '--quiet', '--from', sock, path.join(shm, `r${i}`)], { stdio: 'ignore' }));
      const watch = { journal: rssWatcher(j.pid), broadcast: rssWatcher(b.pid), mirror: rssWatcher(ms[0]!.pid) };
      return {
        dir: mnt!,
        replica: path.join(shm, 'r0'),
        down: async () => {
          const rss = Object.fromEntries(Object.entries(watch).map(([k, w]) => [k, w.stop()]));
          execFileSync('fusermount', ['-u', mnt!]);
          await Promise.all([exit(j), exit(b), ...ms.map(exit)]);
          fs.rmSync(shm, { recursive: true, force: true });
          return rss;
        },
      };
    },
  };
}

const T = {
  plain,
  // Writes arrive 4 KiB at a time without big_writes: a slow reference, measured once.
  bindfs: { ...bindfs('bindfs', 'bindfs (defaults)', []), reps: 1 },
  bindfsBw: bindfs('bindfs-bw', 'bindfs -o big_writes', ['-o', 'big_writes']),
  null: journal('tfs-null', 'tfs-journal > /dev/null', 'none'),
  disk: journal('tfs-disk', 'tfs-journal | tfs-mirror (replica same disk)', 'disk'),
  tmpfs: journal('tfs-tmpfs', 'tfs-journal | tfs-mirror (replica tmpfs)', 'tmpfs'),
};

// ---- Workloads ----

interface Workload {
  key: string;
  label: string;
  unit: string;
  /** Whether a larger figure is better (rates) or a smaller one (times). */
  higher: boolean;
  targets: Target[];
  /** Fewer repetitions than the rest. */
  reps?: number;
  /** Untimed preparation in `dir` before the repetitions. */
  prepare?(dir: string, scratch: string): void;
  run(dir: string, scratch: string): number;
}

function fio(dir: string, rw: 'randwrite' | 'randread'): number {
  const out = execFileSync('fio', ['--name=bench', `--directory=${dir}`, `--rw=${rw}`, '--bs=4k', '--size=256M', `--runtime=${fioSeconds}`, '--time_based', '--ioengine=psync', '--output-format=json'], { encoding: 'utf8' });
  const job = (JSON.parse(out) as { jobs: { read: { iops: number }; write: { iops: number } }[] }).jobs[0]!;
  return rw === 'randwrite' ? job.write.iops : job.read.iops;
}

const fileTargets = [T.plain, T.bindfsBw, T.tmpfs];
// Metadata-heavy workloads also without a mirror: the journal's own cost, apart from a replica
// process that shares the same cores.
const treeTargets = [T.plain, T.bindfsBw, T.null, T.tmpfs];
const WORKLOADS: Workload[] = [
  {
    key: 'seq-write',
    label: `${size} MiB sequential write (dd bs=1M conv=fsync)`,
    unit: 'MiB/s',
    higher: true,
    targets: [T.plain, T.bindfs, T.bindfsBw, T.null, T.disk, T.tmpfs],
    run: (dir) => {
      const s = dd(path.join(dir, 'seq.bin'));
      fs.rmSync(path.join(dir, 'seq.bin'));
      return size / s;
    },
  },
  {
    key: 'seq-read',
    label: `${size} MiB sequential read (dd bs=1M, file in the page cache)`,
    unit: 'MiB/s',
    higher: true,
    targets: fileTargets,
    prepare: (dir) => void dd(path.join(dir, 'read.bin')),
    run: (dir) => size / seconds(() => execFileSync('dd', [`if=${path.join(dir, 'read.bin')}`, 'of=/dev/null', 'bs=1M'], { stdio: 'ignore' })),
  },
  { key: 'rand-write', label: `4 KiB random writes (fio psync, 256 MiB file, ${fioSeconds} s)`, unit: 'IOPS', higher: true, targets: fileTargets, run: (dir) => fio(dir, 'randwrite') },
  { key: 'rand-read', label: `4 KiB random reads (fio psync, 256 MiB file, ${fioSeconds} s)`, unit: 'IOPS', higher: true, targets: fileTargets, run: (dir) => fio(dir, 'randread') },
  {
    key: 'small-files',
    label: `${files} files of 4 KiB created by one process, then removed`,
    unit: 's',
    higher: false,
    targets: treeTargets,
    run: (dir) => seconds(() => sh(`mkdir ${q(dir)}/small && cd ${q(dir)}/small && for i in $(seq 1 ${files}); do printf '%4096s' > f$i; done && cd .. && rm -rf small`)),
  },
  {
    key: 'tar',
    label: '/usr/include unpacked with tar, then removed',
    unit: 's',
    higher: false,
    reps: 2, // the longest workload: the bench stays under 10 minutes
    targets: treeTargets,
    run: (dir, scratch) => seconds(() => sh(`mkdir ${q(dir)}/t && tar xf ${q(scratch)}/include.tar -C ${q(dir)}/t && rm -rf ${q(dir)}/t`)),
  },
  {
    key: 'git',
    label: '/usr/include/linux committed to a new git repository, then git gc',
    unit: 's',
    higher: false,
    targets: treeTargets,
    run: (dir, scratch) => seconds(() => sh(`mkdir ${q(dir)}/g && cd ${q(dir)}/g && git init -q && tar xf ${q(scratch)}/linux.tar && git add -A && git -c user.name=b -c user.email=b@b commit -qm bench && git gc -q && cd .. && rm -rf g`)),
  },
  {
    key: 'stat',
    label: 'stat of every entry of /usr/include (find -printf %s)',
    unit: 's',
    higher: false,
    targets: treeTargets,
    prepare: (dir, scratch) => void sh(`mkdir ${q(dir)}/s && tar xf ${q(scratch)}/include.tar -C ${q(dir)}/s`),
    run: (dir) => seconds(() => sh(`find ${q(dir)}/s -printf '%s\\n' > /dev/null`)),
  },
];

interface Row {
  workload: string;
  target: string;
  unit: string;
  higher: boolean;
  values: number[];
  median: number;
  rss: Record<string, number>;
}
const rows: Row[] = [];

const median = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

function record(workload: string, target: string, unit: string, higher: boolean, values: number[], rss: Record<string, number> = {}): void {
  rows.push({ workload, target, unit, higher, values, median: median(values), rss });
  const spread = values.length > 1 ? `  (${Math.min(...values).toPrecision(4)}–${Math.max(...values).toPrecision(4)})` : '';
  console.log(`  ${target.padEnd(48)} ${median(values).toPrecision(4).padStart(9)} ${unit}${spread}`);
}

/** Every workload on every one of its targets: a target is mounted once for all its workloads. */
async function matrix(base: string, scratch: string): Promise<void> {
  const targets = [...new Set(WORKLOADS.flatMap((w) => w.targets))];
  const results = new Map<string, { values: number[]; rss: Record<string, number> }>();
  for (const target of targets) {
    const workDir = path.join(base, target.key);
    const up = await target.up(workDir);
    const mine = WORKLOADS.filter((w) => w.targets.includes(target));
    const values = new Map<string, number[]>();
    try {
      for (const w of mine) {
        w.prepare?.(up.dir, scratch);
        values.set(w.key, Array.from({ length: Math.min(target.reps ?? reps, w.reps ?? reps) }, () => w.run(up.dir, scratch)));
      }
    } finally {
      const rss = await up.down();
      for (const [k, v] of values) results.set(`${k}/${target.key}`, { values: v, rss });
      fs.rmSync(workDir, { recursive: true, force: true });
    }
    console.error(`bench: ${target.label} done (${elapsed()})`);
  }
  for (const w of WORKLOADS) {
    console.log(`\n# ${w.label}`);
    for (const t of w.targets) {
      const r = results.get(`${w.key}/${t.key}`)!;
      record(w.key, t.label, w.unit, w.higher, r.values, r.rss);
    }
  }
}
/** Resolves with the seconds from `since` until `proc` writes a stderr line matching `re`. */
function stderrLine(proc: ChildProcess, re: RegExp, since: bigint): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = '';
    proc.stderr!.on('data', (d: Buffer) => {
      text += d.toString();
      if (re.test(text)) resolve(Number(process.hrtime.bigint() - since) / 1e9);
    });
    proc.on('exit', () => reject(new Error(`exited before ${re}: ${text}`)));
  });
}

/** A tree of `n` files of `bytes` in total, in directories of 100. */
function makeTree(dir: string, n: number, bytes: number): void {
  const each = Math.floor(bytes / n);
  const block = Buffer.alloc(each);
  for (let i = 0; i < n; i++) {
    const d = path.join(dir, `d${Math.floor(i / 100)}`);
    if (i % 100 === 0) fs.mkdirSync(d, { recursive: true });
    block.writeUInt32LE(i, 0);
    fs.writeFileSync(path.join(d, `f${i}`), block);
  }
}

/**
 * Bootstrapping a tree: rsync -aHAX to a new directory, against the first sync of
 * `tfs-journal STORE MNT | tfs-mirror REPLICA` and a late `tfs-mirror --bootstrap` through
 * tfs-broadcast (a snapshot asked of the journal), each until the replica has everything.
 */
async function bootstrap(base: string): Promise<{ rsync: number; first: number; late: number }> {
  const store = path.join(base, 'store');
  makeTree(store, files, size * MiB);
  execFileSync('sync');
  const rsync = seconds(() => execFileSync('rsync', ['-aHAX', `${store}/`, `${path.join(base, 'rsync')}/`]));
  const [mnt, first, late] = ['mnt', 'first', 'late'].map((d) => path.join(base, d));
  for (const d of [mnt!, first!, late!]) fs.mkdirSync(d);
  let since = process.hrtime.bigint();
  const mirror = spawn(process.execPath, [bin('mirror/main.js'), first!], { stdio: ['pipe', 'ignore', 'pipe'] });
  const journal = spawn(process.execPath, [bin('journal/main.js'), store, mnt!], { stdio: ['ignore', mirror.stdin!, 'ignore'] });
  mirror.stdin!.destroy();
  const firstTime = await stderrLine(mirror, /bootstrap done/, since);
  execFileSync('fusermount', ['-u', mnt!]);
  await exit(journal);
  await exit(mirror);
  const sock = path.join(base, 'sock');
  const broadcast = spawn(process.execPath, [bin('broadcast/main.js'), sock], { stdio: ['pipe', 'ignore', 'ignore'] });
  const journal2 = spawn(process.execPath, [bin('journal/main.js'), '--no-snapshot', store, mnt!], { stdio: ['ignore', broadcast.stdin!, 'ignore'] });
  broadcast.stdin!.destroy();
  await waitMounted(mnt!);
  for (let i = 0; i < 200 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 25));
  since = process.hrtime.bigint();
  const joiner = spawn(process.execPath, [bin('mirror/main.js'), '--from', sock, '--bootstrap', late!], { stdio: ['ignore', 'ignore', 'pipe'] });
  const lateTime = await stderrLine(joiner, /bootstrap done/, since);
  execFileSync('fusermount', ['-u', mnt!]);
  await Promise.all([exit(journal2), exit(broadcast), exit(joiner)]);
  for (const r of [first!, late!]) {
    const diff = execFileSync('rsync', ['-naHAXc', '--delete', '--out-format=%i %n', `${store}/`, `${r}/`], { encoding: 'utf8' });
    if (diff.trim() !== '') throw new Error(`bootstrap bench: ${r} differs from the store:\n${diff.slice(0, 2000)}`);
  }
  return { rsync, first: firstTime, late: lateTime };
}

/**
 * Change-to-replica latency: a small file is written (create, write, close) in `dir`, and the time

/** A saved stream of `mib` MiB of 128 KiB writes to one file, encoded as the journal does (opMeta). */
function savedStream(file: string, mib: number): number {
  const fd = fs.openSync(file, 'w');
  const enc = new FrameEncoder(0n);
  const put = (op: OpInput, data?: Uint8Array) => fs.writeSync(fd, enc.encode(op.type, opMeta(op), data));
  const times: Times = [1n, 2n];
  put({ type: FrameType.STREAM_HEADER, magic: MAGIC, version: PROTOCOL_VERSION, streamId: `bench-${mib}`, startNs: 0n, firstSeq: 1n });
  put({ type: FrameType.CREATE, path: 'f', mode: 0o100644, uid: 0, gid: 0, times, parentTimes: times });
  put({ type: FrameType.OPEN, handle: 1, path: 'f' });
  const data = Buffer.alloc(128 * 1024, 7);
  for (let i = 0; i < mib * 8; i++) put({ type: FrameType.WRITE, handle: 1, offset: i * data.length }, data);
  put({ type: FrameType.RELEASE, handle: 1, times });
  put({ type: FrameType.END, reason: 'bench' });
  fs.closeSync(fd);
  execFileSync('cat', [file], { stdio: 'ignore' }); // into the page cache
  return mib * 8 + 4;
}

/**
 * The mirror alone: the saved stream (in the page cache) replayed onto the disk, then synced; dd
 * writing as much with conv=fsync; rsync bringing an equal tree to the same state, then synced.
 */
function mirrorAlone(base: string): void {
  fs.mkdirSync(base, { recursive: true });
  const file = path.join(base, 'saved.tfs');
  const frames = savedStream(file, size);
  const src = path.join(base, 'src');
  fs.mkdirSync(src);
  fs.writeFileSync(path.join(src, 'f'), Buffer.alloc(size * MiB, 7));
  const dds: number[] = [];
  const mirrors: number[] = [];
  const rsyncs: number[] = [];
  for (let i = 0; i < reps; i++) {
    dds.push(size / dd(path.join(base, 'plain.bin')));
    fs.rmSync(path.join(base, 'plain.bin'));
    const replica = path.join(base, `replica${i}`);
    mirrors.push(seconds(() => sh(`node ${q(bin('mirror/main.js'))} -q ${q(replica)} < ${q(file)} && sync -f ${q(base)}`)));
    fs.rmSync(replica, { recursive: true });
    fs.rmSync(path.join(base, `.replica${i}.tfs-mirror.db`), { force: true });
    rsyncs.push(seconds(() => sh(`rsync -a ${q(src)}/ ${q(base)}/rsync/ && sync -f ${q(base)}`)));
    fs.rmSync(path.join(base, 'rsync'), { recursive: true });
  }
  console.log(`\n# the mirror alone: a saved stream of ${size} MiB of 128 KiB writes (${frames} frames, in the page cache) replayed onto the disk, then synced`);
  record('mirror-alone', 'dd bs=1M conv=fsync (plain directory)', 'MiB/s', true, dds);
  record('mirror-alone', 'tfs-mirror REPLICA < saved; sync', 'MiB/s', true, mirrors.map((s) => size / s));
  record('mirror-alone', 'tfs-mirror, frames applied per second', 'frames/s', true, mirrors.map((s) => frames / s));
  record('mirror-alone', 'rsync -a of an equal tree; sync', 'MiB/s', true, rsyncs.map((s) => size / s));
  fs.rmSync(base, { recursive: true, force: true });
}

/** tfs-broadcast alone: a saved stream served to N clients that read everything (in this process). */
async function broadcasterAlone(base: string): Promise<void> {
  fs.mkdirSync(base, { recursive: true });
  const file = path.join(base, 'saved.tfs');
  savedStream(file, fanMiB);
  console.log(`\n# tfs-broadcast alone: a saved stream of ${fanMiB} MiB served to N clients that read all of it (aggregate rate)`);
  for (const n of [1, 4, 16, 64]) {
    const values: number[] = [];
    let rss = 0;
    for (let i = 0; i < reps; i++) {
      const sock = path.join(base, `sock${n}-${i}`);
      const input = fs.openSync(file, 'r');
      const b = spawn(process.execPath, [bin('broadcast/main.js'), '--min-clients', String(n), sock], { stdio: [input, 'ignore', 'ignore'] });
      fs.closeSync(input);
      const watch = rssWatcher(b.pid);
      await waitFile(sock);
      const started = process.hrtime.bigint();
      const got = await Promise.all(
        Array.from({ length: n }, () =>
          new Promise<number>((resolve, reject) => {
            let bytes = 0;
            const c = net.createConnection(sock, () => c.write(helloFrame()));
            c.on('data', (d: Buffer) => (bytes += d.length));
            c.on('close', () => resolve(bytes));
            c.on('error', reject);
          }),
        ),
      );
      const secs = Number(process.hrtime.bigint() - started) / 1e9;
      rss = Math.max(rss, watch.stop());
      await exit(b);
      if (got.some((g) => g < fanMiB * MiB)) throw new Error(`broadcaster bench: a client got only ${Math.min(...got)} bytes`);
      values.push((n * fanMiB) / secs);
    }
    record('broadcast-alone', `${n} client${n > 1 ? 's' : ''}`, 'MiB/s', true, values, { broadcast: rss });
  }
  fs.rmSync(base, { recursive: true, force: true });
}

/** Writes through the mount while N mirrors follow tfs-broadcast; and the spool and log on and off. */
async function fanOut(base: string): Promise<void> {
  const run = async (t: Target, mib: number, workload: string) => {
    const up = await t.up(path.join(base, t.key));
    const values: number[] = [];
    let rss: Record<string, number> = {};
    try {
      for (let i = 0; i < reps; i++) {
        values.push(mib / dd(path.join(up.dir, 'f.bin'), mib));
        fs.rmSync(path.join(up.dir, 'f.bin'));
      }
    } finally {
      rss = await up.down();
      fs.rmSync(path.join(base, t.key), { recursive: true, force: true });
    }
    record(workload, t.label, 'MiB/s', true, values, rss);
  };
  console.log(`\n# ${fanMiB} MiB sequential write through tfs-journal | tfs-broadcast, N tfs-mirror (replicas on tmpfs)`);
  for (const n of [1, 4, 16]) await run(broadcast(`fan${n}`, `${n} mirror${n > 1 ? 's' : ''}`, n, false), fanMiB, 'fan-out');
  console.log(`\n# ${size} MiB sequential write through tfs-journal | tfs-broadcast | tfs-mirror: spool and log off, on`);
  await run(broadcast('nospool', 'no spool, no log', 1, false), size, 'spool');
  await run(broadcast('spool', 'tfs-journal --spool D | tfs-broadcast --log D', 1, true), size, 'spool');
}

/**
 * Replication lag at a steady rate: small files overwritten (200 of them in turn, each write a new
 * content), from the write returning to the same bytes readable in the replica. A worker thread
 * watches the replica (so that a busy writer never delays the look); a content overtaken by a
 * later one before it was seen counts as seen when the later one is.
 */
async function lag(dir: string, replica: string, opsPerSecond: number, secs: number): Promise<{ lags: number[]; lost: number; rate: number }> {
  const slots = 200;
  const total = opsPerSecond * secs;
  const writtenAt = new Float64Array(new SharedArrayBuffer(total * 8)).fill(-1);
  const seenAt = new Float64Array(new SharedArrayBuffer(total * 8)).fill(-1);
  const state = new Int32Array(new SharedArrayBuffer(8)); // [0] ops written, [1] stop
  const t0 = process.hrtime.bigint();
  const now = () => Number(process.hrtime.bigint() - t0) / 1e6;
  const watcher = new Worker(
    `const fs = require('fs'), path = require('path');
     const { replica, slots, t0, writtenAt, seenAt, state } = require('worker_threads').workerData;
     const now = () => Number(process.hrtime.bigint() - BigInt(t0)) / 1e6;
     let oldest = 0;
     while (Atomics.load(state, 1) === 0) {
       const newest = Atomics.load(state, 0);
       const got = new Map();
       for (let j = oldest; j < newest; j++) {
         if (seenAt[j] >= 0) continue;
         const slot = j % slots;
         if (!got.has(slot)) {
           let k = -1;
           try { k = Number(fs.readFileSync(path.join(replica, 'l' + slot), 'utf8').slice(3)); } catch {}
           got.set(slot, k);
         }
         if (got.get(slot) >= j) seenAt[j] = now();
       }
       while (oldest < newest && seenAt[oldest] >= 0) oldest++;
       // Caught up: sleep until the next write (the writer wakes us). Behind: look again soon.
       if (oldest === newest) Atomics.wait(state, 0, newest, 50);
       else Atomics.wait(state, 1, 0, 0.1);
     }`,
    { eval: true, workerData: { replica, slots, t0: t0.toString(), writtenAt, seenAt, state } },
  );
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < total; i++) {
    const due = (i * 1000) / opsPerSecond;
    while (now() < due) Atomics.wait(sleeper, 0, 0, Math.max(0.05, due - now()));
    fs.writeFileSync(path.join(dir, `l${i % slots}`), `op ${i}`);
    writtenAt[i] = now();
    Atomics.store(state, 0, i + 1);
    Atomics.notify(state, 0);
  }
  const rate = total / (now() / 1000);
  const deadline = now() + 10_000;
  while (seenAt.some((t) => t < 0) && now() < deadline) await new Promise((r) => setTimeout(r, 5));
  Atomics.store(state, 1, 1);
  Atomics.notify(state, 0);
  await watcher.terminate();
  const lags: number[] = [];
  for (let i = 0; i < total; i++) if (seenAt[i]! >= 0) lags.push(seenAt[i]! - writtenAt[i]!);
  return { lags, lost: total - lags.length, rate };
}

async function lagVersusLsyncd(base: string): Promise<void> {
  const rate = env('TFS_BENCH_LAG_OPS', 1000);
  const secs = env('TFS_BENCH_LAG_SECONDS', 5);
  console.log(`\n# replication lag at ${rate} writes/s for ${secs} s: write returned -> same bytes readable in the replica (ms)`);
  const report = (label: string, { lags, lost, rate: achieved }: { lags: number[]; lost: number; rate: number }) => {
    const s = [...lags].sort((a, b) => a - b);
    record('lag-rate', label, 'writes/s', true, [achieved]);
    const pct = (p: number) => s[Math.min(s.length - 1, Math.floor(s.length * p))]!;
    record('lag-p50', label, 'ms', false, [pct(0.5)]);
    record('lag-p99', label, 'ms', false, [pct(0.99)]);
    record('lag-max', label, 'ms', false, [s.at(-1)!]);
    // A write whose bytes never showed up in the replica (10 s after the last one).
    record('lag-never', label, 'writes', false, [lost]);
  };
  for (const t of [T.disk, T.tmpfs]) {
    const up = await t.up(path.join(base, t.key));
    try {
      report(t.label, await lag(up.dir, up.replica!, rate, secs));
    } finally {
      await up.down();
    }
  }
  // lsyncd with the smallest delay it takes, rsync to a local target.
  const [src, dst] = ['src', 'dst'].map((d) => path.join(base, 'lsyncd', d));
  for (const d of [src!, dst!]) fs.mkdirSync(d, { recursive: true });
  const conf = path.join(base, 'lsyncd', 'conf.lua');
  fs.writeFileSync(conf, `settings { nodaemon = true, logfile = "/dev/null" }\nsync { default.rsync, source = "${src}", target = "${dst}", delay = 0 }\n`);
  const l = spawn('lsyncd', [conf], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 1500)); // its startup sync of the empty tree
    report('lsyncd (delay = 0, rsync)', await lag(src!, dst!, rate, secs));
  } finally {
    l.kill('SIGTERM');
    await exit(l);
  }
}
function codec(): { encodeMBs: number; decodeMBs: number } {
  const data = Buffer.alloc(128 * 1024, 7);
  const n = 8192;
  // As the journal does it: header and metadata into the encoder's buffer, the data by reference.
  const enc = new FrameEncoder();
  let sink = 0;
  const te = seconds(() => {
    for (let i = 0; i < n; i++) sink += enc.encodeParts(FrameType.WRITE, { h: 1, o: i * data.length }, data).head.length;
  });
  const stream = new FrameEncoder();
  const all = Buffer.concat(Array.from({ length: 256 }, (_, i) => Buffer.from(stream.encode(FrameType.WRITE, { h: 1, o: i }, data))));
  const dec = new FrameDecoder();
  let count = 0;
  const td = seconds(() => {
    for (let round = 0; round < n / 256; round++) {
      for (let off = 0; off < all.length; off += 65536) for (const _ of dec.push(all.subarray(off, off + 65536))) count++;
    }
  });
  if (count !== n || sink === 0) throw new Error('codec benchmark lost frames');
  return { encodeMBs: (n * data.length) / MiB / te, decodeMBs: (n * data.length) / MiB / td };
}

/**
 * The mirror alone: a saved stream of `size` MiB of 128 KiB writes (in the page cache) replayed onto
 * the disk, then synced, against dd writing the same amount with conv=fsync.
 */

/** The speed of a row against another of the same workload (above 1: faster), by medians. */
function speedup(r: Row, base: Row | undefined): number | undefined {
  if (!base) return undefined;
  return r.higher ? r.median / base.median : base.median / r.median;
}

function machine(diskMiBs: number) {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  return { cpus: os.cpus().length, cpu, memGiB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), node: process.version, diskMiBs: Math.round(diskMiBs), tmpdir: os.tmpdir() };
}

interface Results {
  date: string;
  machine: ReturnType<typeof machine>;
  settings: Record<string, number>;
  rows: Row[];
}

/** results.json: everything measured, and where. */
function saveResults(m: ReturnType<typeof machine>): Results {
  fs.mkdirSync(outDir, { recursive: true });
  const results: Results = { date: new Date().toISOString(), machine: m, settings: { size, files, reps, fanMiB, fioSeconds }, rows };
  fs.writeFileSync(path.join(outDir, 'results.json'), JSON.stringify(results, null, 2) + '\n');
  return results;
}

/** results.md (the tables) and chart.png (gnuplot: TFS against plain and bindfs), from results.json. */
function render({ date, machine: m, settings, rows: all }: Results): void {
  const cell = (text: string) => text.replace(/\|/g, '\\|');
  const md: string[] = [
    `Measured ${date.slice(0, 16).replace('T', ' ')} UTC on ${m.cpus} cores (${m.cpu}), ${m.memGiB} GiB, Linux ${m.kernel}, Node ${m.node}.`,
    `The disk under ${m.tmpdir} in the same run: ${m.diskMiBs} MiB/s sequential write with direct I/O (fio, 1 MiB blocks).`,
    `Each figure: the median of ${settings['reps']} runs (fewer where the spread is empty or narrower), the spread (min–max). ×plain and ×bindfs: speed against the plain directory and against bindfs -o big_writes (above 1: faster).`,
    '',
  ];
  for (const w of [...new Set(all.map((r) => r.workload))]) {
    const mine = all.filter((r) => r.workload === w);
    const plainRow = mine.find((r) => r.target === T.plain.label);
    const bindRow = mine.find((r) => r.target === T.bindfsBw.label);
    md.push(`| ${w} | median | spread | ×plain | ×bindfs | peak RSS (MiB) |`, '|---|---|---|---|---|---|');
    for (const r of mine) {
      const f = (x: number | undefined) => (x === undefined ? '' : x.toFixed(2));
      const spread = r.values.length > 1 ? `${Math.min(...r.values).toPrecision(3)}–${Math.max(...r.values).toPrecision(3)}` : '';
      const rss = Object.entries(r.rss).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ');
      md.push(`| ${cell(r.target)} | ${r.median.toPrecision(4)} ${r.unit} | ${spread} | ${f(speedup(r, plainRow))} | ${f(speedup(r, bindRow))} | ${rss} |`);
    }
    md.push('');
  }
  fs.writeFileSync(path.join(outDir, 'results.md'), md.join('\n'));
  // The chart: every TFS figure of the workloads that have both baselines.
  const dat: string[] = [];
  for (const w of WORKLOADS) {
    const mine = all.filter((r) => r.workload === w.key);
    const plainRow = mine.find((r) => r.target === T.plain.label);
    const bindRow = mine.find((r) => r.target === T.bindfsBw.label);
    for (const r of mine) {
      if (!r.target.startsWith('tfs') || !plainRow || !bindRow) continue;
      const short = r.target.replace('tfs-journal | tfs-mirror', 'tfs | mirror').replace('tfs-journal', 'tfs').replace('(replica ', '(');
      dat.push(`"${w.key}\\n${short}" ${speedup(r, plainRow)!.toFixed(3)} ${speedup(r, bindRow)!.toFixed(3)}`);
    }
  }
  if (dat.length === 0) return;
  const datFile = path.join(outDir, 'chart.dat');
  fs.writeFileSync(datFile, dat.join('\n') + '\n');
  const plot = [
    'set terminal pngcairo noenhanced size 1400,650 font "sans,10"',
    `set output "${path.join(outDir, 'chart.png')}"`,
    `set title "TFS speed against a plain directory and bindfs -o big_writes (median of ${settings['reps']}; ${m.cpus} cores, disk ${m.diskMiBs} MiB/s, ${date.slice(0, 10)})"`,
    'set style data histograms',
    'set style histogram clustered gap 1',
    'set style fill solid 0.8 border -1',
    'set boxwidth 0.9',
    'set xtics rotate by -35 left font ",8"',
    'set ylabel "speed ratio (1 = as fast; higher is better)"',
    'set logscale y 2',
    'set yrange [0.03:4]',
    'set grid ytics',
    'set bmargin 9',
    'set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2',
    `plot "${datFile}" using 2:xtic(1) title "vs plain directory", "" using 3 title "vs bindfs -o big_writes"`,
  ].join('\n');
  execFileSync('gnuplot', [], { input: plot });
  fs.rmSync(datFile);
}

function announceOutputs(): void {
  console.log(`\nbench: wrote ${['results.json', 'results.md', 'chart.png'].map((f) => path.join(outDir, f)).join(', ')}`);
}

async function main() {
  // TFS_BENCH_RENDER=results.json: the tables and the chart again, from saved results.
  const saved = process.env['TFS_BENCH_RENDER'];
  if (saved !== undefined) return render(JSON.parse(fs.readFileSync(saved, 'utf8')) as Results);
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'tfs-bench-'));
  const started = Date.now();
  try {
    const disk = diskSpeed(base);
    const m = machine(disk);
    console.log(`# ${m.cpus} cores (${m.cpu}); the disk under ${os.tmpdir()}: ${m.diskMiBs} MiB/s sequential write, direct I/O (fio, 1 MiB blocks)`);
    const scratch = path.join(base, 'scratch');
    fs.mkdirSync(scratch);
    sh(`tar cf ${q(scratch)}/include.tar -C /usr include && tar cf ${q(scratch)}/linux.tar -C /usr/include linux`);
    const only = process.env['TFS_BENCH_ONLY'];
    // The bootstrap comparison (issue 10's) runs when asked for: TFS_BENCH_ONLY=bootstrap.
    const want = (k: string) => (only === undefined ? k !== 'bootstrap' : only.split(',').includes(k));
    if (want('matrix')) await matrix(path.join(base, 'm'), scratch);
    if (want('fanout')) await fanOut(path.join(base, 'fan'));
    console.error(`bench: fan-out done (${elapsed()})`);
    if (want('broadcast')) await broadcasterAlone(path.join(base, 'bc'));
    if (want('mirror')) mirrorAlone(path.join(base, 'alone'));
    if (want('bootstrap')) {
      console.log(`\n# bootstrapping a tree of ${files} files, ${size} MiB in all, until the replica has all of it (checked with rsync -c; one run)`);
      const b = await bootstrap(path.join(base, 'boot'));
      fs.rmSync(path.join(base, 'boot'), { recursive: true, force: true });
      record('bootstrap', 'rsync -aHAX to a new directory', 's', false, [b.rsync]);
      record('bootstrap', 'first sync: tfs-journal | tfs-mirror', 's', false, [b.first]);
      record('bootstrap', 'late join: tfs-mirror --bootstrap (socket)', 's', false, [b.late]);
    }
    if (want('lag')) await lagVersusLsyncd(path.join(base, 'lag'));
    console.error(`bench: sections done (${elapsed()})`);
    if (want('codec')) {
      const c = codec();
      console.log('\n# codec, 128 KiB write frames, checksummed');
      record('codec', 'encode (data by reference)', 'MiB/s', true, [c.encodeMBs]);
      record('codec', 'decode (64 KiB chunks)', 'MiB/s', true, [c.decodeMBs]);
    }
    render(saveResults(m));
    announceOutputs();
    console.log(`bench: ${((Date.now() - started) / 1000).toFixed(0)} s in all`);
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
}

void main().catch((err: unknown) => {
  console.error(`bench: ${(err as Error).stack}`);
  process.exit(1);
});

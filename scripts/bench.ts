// npm run bench: throughput of the pipeline against baselines measured in the same run.
// Figures are ratios to a plain directory on the same disk (shared, noisy machines).
import { execFileSync, spawn, ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FrameEncoder } from '../shared/encoder';
import { FrameDecoder } from '../shared/decoder';
import { FrameType, MAGIC, PROTOCOL_VERSION } from '../shared/frame';
import { OpInput, Times, opMeta } from '../shared/ops';
import { mountPoints } from '../journal/mount';

const root = path.join(__dirname, '..');
const bin = (p: string) => path.join(root, p);
const MiB = 1024 * 1024;
const size = Number(process.env['TFS_BENCH_MIB'] ?? 1024);
const files = Number(process.env['TFS_BENCH_FILES'] ?? 10000);

function seconds<T>(f: () => T): number {
  const t = process.hrtime.bigint();
  f();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

function dd(target: string): number {
  return seconds(() => execFileSync('dd', ['if=/dev/zero', `of=${target}`, 'bs=1M', `count=${size}`, 'conv=fsync'], { stdio: 'ignore' }));
}

/** The disk's own sequential write speed, without the page cache (fio, O_DIRECT), in MiB/s. */
function diskSpeed(dir: string): number {
  const out = execFileSync('fio', ['--name=disk', `--filename=${path.join(dir, 'disk.bin')}`, '--rw=write', '--bs=1M', `--size=${size}M`, '--direct=1', '--ioengine=psync', '--output-format=json'], { encoding: 'utf8' });
  fs.rmSync(path.join(dir, 'disk.bin'));
  return (JSON.parse(out) as { jobs: { write: { bw: number } }[] }).jobs[0]!.write.bw / 1024;
}

function smallFiles(dir: string): number {
  return seconds(() => execFileSync('bash', ['-c', `mkdir -p '${dir}/small' && cd '${dir}/small' && for i in $(seq 1 ${files}); do echo "file $i" > f$i; done`]));
}

async function waitMounted(mnt: string): Promise<void> {
  for (let i = 0; i < 200 && !mountPoints().includes(mnt); i++) await new Promise((r) => setTimeout(r, 25));
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

async function exit(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null) return;
  await new Promise((r) => p.on('exit', r));
}

/** Runs `work(mnt, replica)` on `tfs-journal store mnt | tfs-mirror replica`; returns its result and the time until the replica has everything. */
async function throughTfs<T>(base: string, work: (mnt: string, replica: string) => T | Promise<T>) {
  const [store, mnt, replica] = ['store', 'mnt', 'replica'].map((d) => path.join(base, d));
  for (const d of [store!, mnt!, replica!]) fs.mkdirSync(d, { recursive: true });
  const mirror = spawn(process.execPath, [bin('mirror/main.js'), '--quiet', replica!], { stdio: ['pipe', 'ignore', 'inherit'] });
  const journal = spawn(process.execPath, [bin('journal/main.js'), store!, mnt!], { stdio: ['ignore', mirror.stdin!, 'ignore'] });
  mirror.stdin!.destroy();
  await waitMounted(mnt!);
  const started = process.hrtime.bigint();
  const writer = await work(mnt!, replica!);
  const rss = { journal: peakRss(journal.pid), mirror: peakRss(mirror.pid) };
  execFileSync('fusermount', ['-u', mnt!]);
  await exit(journal);
  await exit(mirror);
  const endToEnd = Number(process.hrtime.bigint() - started) / 1e9;
  return { writer, endToEnd, rss };
}

async function throughBindfs(base: string, work: (mnt: string) => number): Promise<number> {
  const [store, mnt] = ['bstore', 'bmnt'].map((d) => path.join(base, d));
  fs.mkdirSync(store!, { recursive: true });
  fs.mkdirSync(mnt!, { recursive: true });
  const bindfs = spawn('bindfs', ['-f', '-o', 'big_writes', store!, mnt!], { stdio: 'ignore' });
  await waitMounted(mnt!);
  try {
    return work(mnt!);
  } finally {
    execFileSync('fusermount', ['-u', mnt!]);
    await exit(bindfs);
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

/**
 * `tfs-journal [--spool D] | tfs-broadcast [--log D] S` with one mirror, and optionally a client
 * that says HELLO and then reads nothing: the writer's time for `work`, and peak RSS of each process.
 */
async function throughBroadcast(base: string, opts: { spool: boolean; stalled: boolean }, work: (mnt: string) => number) {
  const [store, mnt, replica] = ['store', 'mnt', 'replica'].map((d) => path.join(base, d));
  for (const d of [store!, mnt!, replica!]) fs.mkdirSync(d, { recursive: true });
  const sock = path.join(base, 'sock');
  const spool = path.join(base, 'spool');
  const broadcast = spawn(process.execPath, [bin('broadcast/main.js'), ...(opts.spool ? ['--log', spool] : []), sock], { stdio: ['pipe', 'ignore', 'ignore'] });
  const journal = spawn(process.execPath, [bin('journal/main.js'), ...(opts.spool ? ['--spool', spool] : []), store!, mnt!], { stdio: ['ignore', broadcast.stdin!, 'ignore'] });
  broadcast.stdin!.destroy();
  await waitMounted(mnt!);
  for (let i = 0; i < 200 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 25));
  const mirror = spawn(process.execPath, [bin('mirror/main.js'), '--quiet', '--from', sock, replica!], { stdio: 'ignore' });
  const { helloFrame } = await import('../mirror/source');
  const stalled = opts.stalled ? (await import('node:net')).createConnection(sock, function (this: import('node:net').Socket) { this.write(helloFrame()); this.pause(); }) : undefined;
  stalled?.on('error', () => {});
  await new Promise((r) => setTimeout(r, 300));
  const watch = [journal, broadcast, mirror].map((p) => rssWatcher(p.pid));
  const writer = work(mnt!);
  const [jr, br, mr] = watch.map((w) => w.stop());
  execFileSync('fusermount', ['-u', mnt!]);
  await exit(journal);
  stalled?.destroy();
  await exit(broadcast);
  await exit(mirror);
  return { writer, rss: { journal: jr!, broadcast: br!, mirror: mr! } };
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
 * until `replicaDir` holds its content is taken; for a plain directory, `replicaDir` is `dir` itself.
 */
async function latencies(dir: string, replicaDir: string, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const body = `change ${i}`;
    const started = process.hrtime.bigint();
    fs.writeFileSync(path.join(dir, `l${i}`), body);
    for (;;) {
      try {
        if (fs.readFileSync(path.join(replicaDir, `l${i}`), 'utf8') === body) break;
      } catch {
        // not there yet
      }
      await new Promise((r) => setImmediate(r));
    }
    out.push(Number(process.hrtime.bigint() - started) / 1e6);
  }
  return out.sort((a, b) => a - b);
}

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;

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
function mirrorAlone(base: string): { plain: number; mirror: number } {
  fs.mkdirSync(base, { recursive: true });
  const file = path.join(base, 'saved.tfs');
  const fd = fs.openSync(file, 'w');
  // The project's own encoding of each op (opMeta), as the journal writes it.
  const enc = new FrameEncoder(0n);
  const put = (op: OpInput, data?: Uint8Array) => fs.writeSync(fd, enc.encode(op.type, opMeta(op), data));
  const T: Times = [1n, 2n];
  put({ type: FrameType.STREAM_HEADER, magic: MAGIC, version: PROTOCOL_VERSION, streamId: 'bench-mirror', startNs: 0n, firstSeq: 1n });
  put({ type: FrameType.CREATE, path: 'f', mode: 0o100644, uid: 0, gid: 0, times: T, parentTimes: T });
  put({ type: FrameType.OPEN, handle: 1, path: 'f' });
  const data = Buffer.alloc(128 * 1024, 7);
  for (let i = 0; i < size * 8; i++) put({ type: FrameType.WRITE, handle: 1, offset: i * data.length }, data);
  put({ type: FrameType.RELEASE, handle: 1, times: T });
  put({ type: FrameType.END, reason: 'bench' });
  fs.closeSync(fd);
  execFileSync('cat', [file], { stdio: ['ignore', 'ignore', 'ignore'] });
  const plain = dd(path.join(base, 'plain.bin'));
  fs.rmSync(path.join(base, 'plain.bin'));
  const replica = path.join(base, 'replica');
  const mirror = seconds(() => execFileSync('bash', ['-c', `node '${bin('mirror/main.js')}' -q '${replica}' < '${file}' && sync -f '${base}'`]));
  fs.rmSync(file);
  return { plain, mirror };
}

function printMirror(base: string): void {
  const m = mirrorAlone(path.join(base, 'alone'));
  fs.rmSync(path.join(base, 'alone'), { recursive: true, force: true });
  console.log(`\n# the mirror alone: a saved stream of ${size} MiB of 128 KiB writes (in the page cache) replayed, then synced`);
  console.log(`dd bs=1M conv=fsync to a plain directory   ${m.plain.toFixed(2)} s  ${(size / m.plain).toFixed(0)} MiB/s  1.00`);
  console.log(`tfs-mirror REPLICA < saved; sync           ${m.mirror.toFixed(2)} s  ${(size / m.mirror).toFixed(0)} MiB/s  ${(m.plain / m.mirror).toFixed(2)}x the plain rate`);
}

async function printBootstrap(base: string): Promise<void> {
  console.log(`\n# bootstrapping a tree of ${files} files, ${size} MiB in all, until the replica has all of it (checked with rsync -c)`);
  const b = await bootstrap(path.join(base, 'boot'));
  fs.rmSync(path.join(base, 'boot'), { recursive: true });
  console.log(`rsync -aHAX to a new directory            ${b.rsync.toFixed(2)} s  ${(size / b.rsync).toFixed(0)} MiB/s  1.00`);
  console.log(`first sync: tfs-journal | tfs-mirror       ${b.first.toFixed(2)} s  ${(size / b.first).toFixed(0)} MiB/s  ${(b.first / b.rsync).toFixed(2)}x rsync`);
  console.log(`late join: tfs-mirror --bootstrap (socket) ${b.late.toFixed(2)} s  ${(size / b.late).toFixed(0)} MiB/s  ${(b.late / b.rsync).toFixed(2)}x rsync`);
}

async function main() {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'tfs-bench-'));
  try {
    const fmt = (s: number) => `${s.toFixed(2)} s  ${(size / s).toFixed(0)} MiB/s`;
    console.log(`# the disk under ${os.tmpdir()}: ${diskSpeed(base).toFixed(0)} MiB/s sequential write, direct I/O (fio, 1 MiB blocks)`);
    if (process.env['TFS_BENCH_ONLY'] === 'bootstrap') return await printBootstrap(base);
    if (process.env['TFS_BENCH_ONLY'] === 'mirror') return printMirror(base);
    console.log(`# ${size} MiB sequential write (dd bs=1M conv=fsync), ${os.cpus().length} cores`);
    const plain = dd(path.join(base, 'plain.bin'));
    fs.rmSync(path.join(base, 'plain.bin'));
    const bind = await throughBindfs(base, (m) => dd(path.join(m, 'f.bin')));
    fs.rmSync(path.join(base, 'bstore'), { recursive: true });
    const tfs = await throughTfs(path.join(base, 'seq'), (m) => dd(path.join(m, 'f.bin')));
    fs.rmSync(path.join(base, 'seq'), { recursive: true });
    console.log(`plain directory             ${fmt(plain)}  1.00`);
    console.log(`bindfs -o big_writes (C)    ${fmt(bind)}  ${(bind / plain).toFixed(2)}x plain`);
    console.log(`tfs-journal | tfs-mirror    writer ${fmt(tfs.writer)}  ${(tfs.writer / plain).toFixed(2)}x plain, ${(tfs.writer / bind).toFixed(2)}x bindfs`);
    console.log(`  until the replica has it  ${fmt(tfs.endToEnd)}  ${(tfs.endToEnd / plain).toFixed(2)}x plain`);
    console.log(`  peak RSS: journal ${tfs.rss.journal.toFixed(0)} MiB, mirror ${tfs.rss.mirror.toFixed(0)} MiB`);

    console.log(`\n# ${files} small files (bash: echo > file)`);
    const sp = smallFiles(path.join(base, 'plain-small'));
    const sb = await throughBindfs(base, (m) => smallFiles(m));
    const st = await throughTfs(path.join(base, 'small'), (m) => smallFiles(m));
    console.log(`plain directory             ${sp.toFixed(2)} s  ${(files / sp).toFixed(0)} files/s  1.00`);
    console.log(`bindfs (C)                  ${sb.toFixed(2)} s  ${(files / sb).toFixed(0)} files/s  ${(sb / sp).toFixed(2)}x plain`);
    console.log(`tfs-journal | tfs-mirror    writer ${st.writer.toFixed(2)} s  ${(files / st.writer).toFixed(0)} files/s  ${(st.writer / sp).toFixed(2)}x plain, ${(st.writer / sb).toFixed(2)}x bindfs`);

    console.log(`\n# ${size} MiB through tfs-journal | tfs-broadcast | one tfs-mirror: spool and log on and off, a stalled client`);
    const plainB = await throughBroadcast(path.join(base, 'b1'), { spool: false, stalled: false }, (m) => dd(path.join(m, 'f.bin')));
    fs.rmSync(path.join(base, 'b1'), { recursive: true });
    const spooled = await throughBroadcast(path.join(base, 'b2'), { spool: true, stalled: false }, (m) => dd(path.join(m, 'f.bin')));
    fs.rmSync(path.join(base, 'b2'), { recursive: true });
    const stalledRun = await throughBroadcast(path.join(base, 'b3'), { spool: true, stalled: true }, (m) => dd(path.join(m, 'f.bin')));
    fs.rmSync(path.join(base, 'b3'), { recursive: true });
    const rssOf = (r: { rss: { journal: number; broadcast: number; mirror: number } }) => `journal ${r.rss.journal.toFixed(0)}, broadcast ${r.rss.broadcast.toFixed(0)}, mirror ${r.rss.mirror.toFixed(0)} MiB`;
    console.log(`no spool, no log             ${fmt(plainB.writer)}  1.00   peak RSS: ${rssOf(plainB)}`);
    console.log(`--spool D | --log D          ${fmt(spooled.writer)}  ${(plainB.writer / spooled.writer).toFixed(2)}x the rate   peak RSS: ${rssOf(spooled)}`);
    console.log(`  + a client reading nothing ${fmt(stalledRun.writer)}  ${(spooled.writer / stalledRun.writer).toFixed(2)}x the rate without it   peak RSS: ${rssOf(stalledRun)} (${size} MiB behind that client)`);

    printMirror(base);
    await printBootstrap(base);

    const n = Number(process.env['TFS_BENCH_LATENCY_N'] ?? 500);
    console.log(`\n# latency: a small file written, until it can be read back (${n} files)`);
    fs.mkdirSync(path.join(base, 'plain-lat'));
    const lp = await latencies(path.join(base, 'plain-lat'), path.join(base, 'plain-lat'), n);
    const lt = (await throughTfs(path.join(base, 'lat'), (m, r) => latencies(m, r, n))).writer;
    console.log(`plain directory, read back       median ${pct(lp, 0.5).toFixed(3)} ms  p99 ${pct(lp, 0.99).toFixed(3)} ms`);
    console.log(`mount -> journal -> mirror replica median ${pct(lt, 0.5).toFixed(3)} ms  p99 ${pct(lt, 0.99).toFixed(3)} ms  max ${lt.at(-1)!.toFixed(3)} ms`);

    const c = codec();
    console.log(`\n# codec, 128 KiB write frames, checksummed: encode ${c.encodeMBs.toFixed(0)} MiB/s (data by reference), decode ${c.decodeMBs.toFixed(0)} MiB/s (64 KiB chunks)`);
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
}

void main();

import { test, TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { BIN, Proc, dirs, exitOf, freePort, isMounted, start, tempDir, treeDiff, unmount, waitFor } from './harness';
import { makeArchive } from './workloads';

const CHURN = path.join(__dirname, 'churn.js');
const SSHD = '/usr/sbin/sshd';


/**
 * Debian's sshd on a loopback port, with a throwaway host key and a throwaway client key, all
 * in `base`; killed by pid when the test ends. Returns the ssh command line that reaches it.
 */
async function startSshd(t: TestContext, base: string): Promise<string[]> {
  assert.ok(fs.existsSync(SSHD), 'sshd is missing: run scripts/setup.sh (it installs openssh-server)');
  assert.ok(fs.existsSync('/run/sshd'), 'sshd needs /run/sshd: run scripts/setup.sh');
  const dir = path.join(base, 'ssh');
  fs.mkdirSync(dir, { mode: 0o700 });
  for (const key of ['host', 'user']) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, key)]);
  fs.copyFileSync(path.join(dir, 'user.pub'), path.join(dir, 'authorized_keys'));
  const port = await freePort();
  fs.writeFileSync(path.join(dir, 'sshd_config'), [
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${path.join(dir, 'host')}`,
    `PidFile ${path.join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
    'StrictModes no',
    'UsePAM no',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PermitRootLogin prohibit-password',
    'AllowStreamLocalForwarding yes',
    // Each test's processes stay its own: the environment is set on the remote command line.
    'PermitUserEnvironment no',
    '',
  ].join('\n'));
  const sshd = start(t, SSHD, ['-D', '-e', '-f', path.join(dir, 'sshd_config')]);
  const ssh = ['ssh', '-p', String(port), '-i', path.join(dir, 'user'), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no',
    '-o', `UserKnownHostsFile=${path.join(dir, 'known_hosts')}`, '-o', 'LogLevel=ERROR', '-o', 'StreamLocalBindUnlink=yes'];
  await waitFor(() => {
    try {
      execFileSync(ssh[0]!, [...ssh.slice(1), '127.0.0.1', 'true'], { stdio: 'ignore', timeout: 5000 });
      return true;
    } catch {
      return false;
    }
  }, 15_000, `sshd on 127.0.0.1:${port}: ${sshd.stderr()}`);
  return ssh;
}

/** A shell command line, each word quoted. */
function shell(words: string[]): string {
  return words.map((w) => `'${w.replace(/'/g, `'\\''`)}'`).join(' ');
}

/** The remote side of a pipeline: TFS_RUNTIME_DIR travels on the command line (sshd passes no environment). */
function remote(words: string[]): string {
  return `TFS_RUNTIME_DIR=${shell([process.env['TFS_RUNTIME_DIR']!])} ${shell(words)}`;
}

test('over ssh: ssh HOST tfs-journal STORE MNT | tfs-mirror REPLICA gives the store, old files and live changes (first sync)', { timeout: 180_000 }, async (t) => {
  const base = tempDir(t, 'ssh-first');
  const [store, mnt, replica] = dirs(base, 'store', 'mnt', 'replica');
  execFileSync('tar', ['-xf', makeArchive(base), '-C', store!]);
  fs.writeFileSync(path.join(store!, 'big'), Buffer.alloc(3 * 1024 * 1024 + 5, 9));
  fs.linkSync(path.join(store!, 'big'), path.join(store!, 'big-too'));
  const ssh = await startSshd(t, base);
  const line = `${shell(ssh)} 127.0.0.1 ${shell([remote([process.execPath, BIN.journal, store!, mnt!])])} | ${shell([process.execPath, BIN.mirror, '--preserve-privileges', replica!])}`;
  const pipeline = start(t, 'bash', ['-o', 'pipefail', '-c', line]);
  await waitFor(() => fs.existsSync(path.join(mnt!, 'big')), 30_000, `the mount over ssh: ${pipeline.stderr()}`);
  const stop = path.join(base, 'stop');
  const churn = start(t, process.execPath, [CHURN, path.join(mnt!, 'work'), '77', stop], { stdio: ['ignore', 'pipe', 'pipe'] });
  await waitFor(() => /snapshot 1 done/.test(pipeline.stderr()), 120_000, 'the first sync');
  await new Promise((r) => setTimeout(r, 300));
  fs.writeFileSync(stop, '');
  assert.equal(await exitOf(churn), 0, churn.stderr());
  unmount(mnt!);
  assert.equal(await exitOf(pipeline), 0, pipeline.stderr());
  assert.match(pipeline.stderr(), /bootstrap done at frame #\d+/);
  assert.equal(treeDiff(store!, replica!), '', 'the replica equals the store');
});

test('over ssh: ssh -L CTL:REMOTE-CTL HOST tfs-journal --control REMOTE-CTL STORE MNT | tfs-broadcast --control CTL SOCKET, and late replicas join with --bootstrap and --bootstrap-with rsync over ssh', { timeout: 240_000 }, async (t) => {
  const base = tempDir(t, 'ssh-join');
  const [store, mnt, r1, r2] = dirs(base, 'store', 'mnt', 'r1', 'r2');
  execFileSync('tar', ['-xf', makeArchive(base), '-C', store!]);
  const ssh = await startSshd(t, base);
  const sock = path.join(base, 'sock');
  // The journal's control socket is on the remote host; ssh forwards a local socket to it, and
  // the broadcaster is told to use that one instead of the path in the stream header.
  const remoteCtl = path.join(base, 'remote-ctl.sock');
  const localCtl = path.join(base, 'local-ctl.sock');
  const line = `${shell([...ssh, '-L', `${localCtl}:${remoteCtl}`])} 127.0.0.1 ${shell([remote([process.execPath, BIN.journal, '--control', remoteCtl, store!, mnt!])])} | ${shell([process.execPath, BIN.broadcast, '--control', localCtl, sock])}`;
  const pipeline = start(t, 'bash', ['-o', 'pipefail', '-c', line]);
  await waitFor(() => fs.existsSync(sock) && fs.existsSync(localCtl) && isMounted(mnt!), 30_000, `the pipeline over ssh: ${pipeline.stderr()}`);
  const stop = path.join(base, 'stop');
  const churn = start(t, process.execPath, [CHURN, path.join(mnt!, 'work'), '78', stop], { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise((r) => setTimeout(r, 500));
  const mirror = (replica: string, extra: string[]): Proc => start(t, process.execPath, [BIN.mirror, '--preserve-privileges', '--from', sock, ...extra, replica]);
  const snapshot = mirror(r1!, ['--bootstrap']);
  // The copy the seed describes, by rsync over the same ssh; -H is left out: rsync 3.5.0 -H
  // deadlocks now and then on a tree that changes under it. Hard links come back in the repair.
  const rsync = `rsync -a --inplace -e ${shell([shell(ssh)])} 127.0.0.1:${shell([`${store}/`])} ${shell([`${r2}/`])}`;
  const copied = mirror(r2!, ['--bootstrap-with', rsync]);
  await waitFor(() => /bootstrap done/.test(snapshot.stderr()) && /bootstrap done/.test(copied.stderr()), 120_000, 'both late replicas').catch((err: Error) => {
    throw new Error(`${err.message}\n--bootstrap: ${snapshot.stderr()}\n--bootstrap-with: ${copied.stderr()}\npipeline: ${pipeline.stderr()}`);
  });
  await new Promise((r) => setTimeout(r, 300));
  fs.writeFileSync(stop, '');
  assert.equal(await exitOf(churn), 0, churn.stderr());
  unmount(mnt!);
  assert.equal(await exitOf(pipeline), 0, pipeline.stderr());
  for (const [name, m] of [['--bootstrap', snapshot], ['--bootstrap-with', copied]] as const) assert.equal(await exitOf(m), 0, `${name}: ${m.stderr()}`);
  assert.match(snapshot.stderr(), /bootstrapping from snapshot/);
  for (const r of [r1!, r2!]) assert.equal(treeDiff(store!, r), '', `replica ${path.basename(r)} equals the store`);
});

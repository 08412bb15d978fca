import { spawn } from 'node:child_process';
import { ErrorCode, TfsError } from '../shared/errors';

/**
 * Runs the user's copy command (`--bootstrap-with`) through the shell, its output on stderr.
 * Exit 0 is success, and so is rsync's 24: files vanished during the copy, which is what a copy
 * of a live tree meets; the repair session brings their current state (or their absence).
 */
export function runCopy(command: string, log: (m: string) => void): Promise<void> {
  log(`copying with: ${command}`);
  return new Promise((resolve, reject) => {
    // In a process group of its own: a copy must never outlive the mirror that started it (a rerun
    // would race it into REPLICA), and the group takes the shell's children (rsync, ssh) too.
    const child = spawn('sh', ['-c', command], { stdio: ['ignore', 2, 2], detached: true });
    const kill = () => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // gone already
      }
    };
    process.once('exit', kill);
    child.once('exit', () => process.off('exit', kill));
    child.on('error', (err) => reject(new TfsError(ErrorCode.USAGE, `the copy command could not start: ${err.message}`)));
    child.on('exit', (code, signal) => {
      if (code === 0) return resolve();
      if (code === 24) {
        log('the copy met files that vanished while it ran (rsync 24): the repair brings them');
        return resolve();
      }
      reject(new TfsError(ErrorCode.APPLY_FAILED, `the copy command failed (${signal ?? `exit ${code}`}): ${command}`, { hint: 'Fix it and run the same command again: the bootstrap starts over.' }));
    });
  });
}

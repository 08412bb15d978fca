import { createHash, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { ErrorCode, TfsError } from './errors';

/** The shortest token accepted: 16 characters (a `openssl rand -hex 16` gives 32). */
const MIN_TOKEN = 16;

/**
 * Reads the shared secret of a WebSocket transport from `file` (never from the command line,
 * where `ps` shows it): its first line, without surrounding blanks. Refused when the file may be
 * read by others than its owner, or the token is shorter than 16 characters.
 */
export function readTokenFile(file: string): Buffer {
  let st: fs.Stats;
  let text: string;
  try {
    st = fs.statSync(file);
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new TfsError(ErrorCode.USAGE, `--token-file ${file}: ${(err as Error).message}`);
  }
  if ((st.mode & 0o077) !== 0) {
    throw new TfsError(ErrorCode.USAGE, `--token-file ${file} may be read by others (mode ${(st.mode & 0o777).toString(8)})`, { hint: `chmod 600 ${file}` });
  }
  const token = (text.split('\n')[0] ?? '').trim();
  if (token.length < MIN_TOKEN) {
    throw new TfsError(ErrorCode.USAGE, `--token-file ${file}: the token is ${token.length} characters, at least ${MIN_TOKEN} are needed`, { hint: 'Make one with: openssl rand -hex 32 > FILE; chmod 600 FILE' });
  }
  return Buffer.from(token);
}

/**
 * Whether `given` is the token, in time that does not depend on where they differ (both are
 * hashed first, so their lengths do not show either).
 */
export function tokenMatches(token: Buffer, given: string | undefined): boolean {
  if (given === undefined) return false;
  const a = createHash('sha256').update(token).digest();
  const b = createHash('sha256').update(given).digest();
  return timingSafeEqual(a, b);
}

/** The HTTP Authorization header value that carries a token. */
export function bearer(token: Buffer): string {
  return `Bearer ${token.toString()}`;
}

/** The token in an HTTP Authorization header, if it carries one. */
export function fromBearer(header: string | undefined): string | undefined {
  const m = /^Bearer (.+)$/.exec(header ?? '');
  return m ? m[1] : undefined;
}

/** Whether `host` names this machine only (a listener there is unreachable from others). */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  if (h === 'localhost' || h === '::1') return true;
  return net.isIPv4(h) && h.startsWith('127.');
}

import { Cap } from './frame';
import { ErrorCode, TfsError } from './errors';

/**
 * Checks a path carried in a frame: relative to the tree root, '/'-separated, no empty, '.' or '..'
 * component, no NUL, within Cap.PATH bytes and Cap.NAME per component. '' names the root itself.
 * Returns the reason it is refused, or undefined when it is acceptable.
 */
export function pathProblem(path: string): string | undefined {
  if (path === '') return undefined;
  if (path.includes('\0')) return 'holds a NUL byte';
  if (path.startsWith('/')) return 'is absolute';
  if (Buffer.byteLength(path) > Cap.PATH) return `is longer than ${Cap.PATH} bytes`;
  for (const part of path.split('/')) {
    if (part === '') return 'has an empty component';
    if (part === '.' || part === '..') return `has a '${part}' component`;
    if (Buffer.byteLength(part) > Cap.NAME) return `has a component longer than ${Cap.NAME} bytes`;
  }
  return undefined;
}

/** Throws TfsError HOSTILE_PATH when the path is not acceptable. */
export function checkPath(path: string, seq?: bigint): string {
  const problem = pathProblem(path);
  if (problem !== undefined) {
    throw new TfsError(ErrorCode.HOSTILE_PATH, `path ${JSON.stringify(path)} ${problem}`, { seq });
  }
  return path;
}

/** '/a/b' as FUSE gives it to 'a/b' as frames carry it; '/' becomes ''. */
export function fromFusePath(path: string): string {
  return path.length > 0 && path[0] === '/' ? path.slice(1) : path;
}

/** The parent of a frame path ('' for entries in the root). */
export function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i);
}

import { parseArgs, ParseArgsConfig } from 'node:util';
import { ErrorCode, TfsError, exitCodeFor } from './errors';
import { writeStderr } from './log';

type Options = NonNullable<ParseArgsConfig['options']>;

/** Parses argv with node:util parseArgs; prints help and exits on --help; usage errors become TfsError USAGE. */
export function parseCommandLine<O extends Options>(help: string, options: O, positionals: { min: number; max: number }) {
  const hint = `${help.split('\n')[0]}\nTry --help for more.`;
  let parsed;
  try {
    parsed = parseArgs({ args: process.argv.slice(2), options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  } catch (err) {
    throw new TfsError(ErrorCode.USAGE, (err as Error).message, { hint });
  }
  if ((parsed.values as Record<string, unknown>)['help']) {
    process.stdout.write(help + '\n');
    process.exit(0);
  }
  if (parsed.positionals.length < positionals.min || parsed.positionals.length > positionals.max) {
    throw new TfsError(ErrorCode.USAGE, `expected ${positionals.min === positionals.max ? positionals.min : `${positionals.min} to ${positionals.max}`} arguments, got ${parsed.positionals.length}`, { hint });
  }
  return parsed as { values: { [K in keyof O]?: O[K]['type'] extends 'boolean' ? boolean : O[K] extends { multiple: true } ? string[] : string }; positionals: string[] };
}

/** Runs a command's main: errors are printed with their code on stderr and mapped to an exit code. */
export function runMain(name: string, main: () => Promise<number | void>): void {
  main().then(
    (code) => {
      process.exitCode = code ?? 0;
    },
    (err: unknown) => {
      const code = err instanceof TfsError ? ` [${err.code}]` : '';
      const hint = err instanceof TfsError && err.hint ? `${err.hint}\n` : '';
      writeStderr(`${name}: ${err instanceof Error ? err.message : String(err)}${code}\n${hint}`);
      process.exit(exitCodeFor(err));
    },
  );
}

/** A numeric option, checked. */
export function intOption(value: string | undefined, name: string, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min) throw new TfsError(ErrorCode.USAGE, `--${name} must be an integer of at least ${min}, not ${JSON.stringify(value)}`);
  return n;
}

const SIZE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };
const TIME_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** A size option: bytes, or with a K/M/G/T suffix (powers of 1024). */
export function sizeOption(value: string | undefined, name: string, fallback?: number): number | undefined {
  if (value === undefined) return fallback;
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(value.trim());
  if (!m) throw new TfsError(ErrorCode.USAGE, `--${name} must be a size such as 512M or 10G, not ${JSON.stringify(value)}`);
  return Math.floor(Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]!);
}

/** A duration option: a number with ms, s, m, h or d, in milliseconds. */
export function durationOption(value: string | undefined, name: string, fallback?: number): number | undefined {
  if (value === undefined) return fallback;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(value.trim());
  if (!m) throw new TfsError(ErrorCode.USAGE, `--${name} must be a duration such as 90s, 30m, 12h or 7d, not ${JSON.stringify(value)}`);
  return Math.floor(Number(m[1]) * TIME_UNITS[m[2]!]!);
}

/** A choice among the values of an `as const` object. */
export function choiceOption<T extends string>(value: string | undefined, name: string, choices: Record<string, T>, fallback: T): T {
  if (value === undefined) return fallback;
  const all = Object.values(choices);
  if (!all.includes(value as T)) throw new TfsError(ErrorCode.USAGE, `--${name} must be one of ${all.join(', ')}, not ${JSON.stringify(value)}`);
  return value as T;
}

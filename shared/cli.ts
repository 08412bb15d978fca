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

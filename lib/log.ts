// Logging to stderr that cooperates with the one-line progress meter: a message first clears
// the live line so the two never interleave on a terminal.

type LiveLine = { clear(): void; redraw(): void };
let live: LiveLine | null = null;

/** Used by the progress meter to register the line it keeps at the bottom of a terminal. */
export function setLiveLine(line: LiveLine | null): void {
  live = line;
}

function write(level: string, msg: string): void {
  live?.clear();
  process.stderr.write(level ? `${level}: ${msg}\n` : `${msg}\n`);
  live?.redraw();
}

export const log = {
  info: (msg: string): void => write('', msg),
  warn: (msg: string): void => write('warning', msg),
  error: (msg: string): void => write('error', msg),
};

/** The message of anything thrown, on one line. */
export function errorMessage(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.replace(/\s*\n\s*/g, ' ');
}

// Receives one response from undici through its dispatcher handler API and hands the body to the
// caller as an async iterable, buffered by us, never by pausing undici's HTTP/1 parser.
//
// Why not undici's own `request()` body stream: a stream applies backpressure by pausing the parser,
// and when a server closes the connection (HTTP/1.0, `Connection: close`) while the parser is
// paused, undici 7 throws `AssertionError: assert(!this.paused)` from the socket's 'end' handler,
// where no caller can catch it, and the process dies (nodejs/undici#5360, fixed only in undici 8,
// which needs Node 22). Here the parser is never paused: every chunk is taken at once into our
// queue, whose size is bounded by the body cap and by `highWaterBytes`: a reader that falls that far
// behind the network gets an error for this request instead of unbounded memory.
import type { Dispatcher } from 'undici';

type Headers = Record<string, string | string[] | undefined>;

export interface ResponseHead {
  status: number;
  headers: Headers;
}

export class ReaderTooSlowError extends Error {
  readonly code = 'READER_TOO_SLOW';
}

export class BodyCapError extends Error {
  readonly code = 'BODY_CAP';
}

export class ResponseReceiver implements Dispatcher.DispatchHandler {
  /** Resolves with the final (non-1xx) status and headers; rejects if the request fails before them. */
  readonly head: Promise<ResponseHead>;
  private resolveHead!: (h: ResponseHead) => void;
  private rejectHead!: (e: Error) => void;
  private headDone = false;
  private controller: Dispatcher.DispatchController | undefined;
  private abortReason: Error | undefined;
  private readonly queue: Buffer[] = [];
  private queuedBytes = 0;
  private receivedBytes = 0;
  private ended = false;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly maxBytes: number,
    private readonly highWaterBytes: number,
  ) {
    this.head = new Promise<ResponseHead>((resolve, reject) => {
      this.resolveHead = resolve;
      this.rejectHead = reject;
    });
    // A request aborted before anyone awaits the head must not count as an unhandled rejection.
    this.head.catch(() => {});
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.abortReason) controller.abort(this.abortReason);
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: Headers): void {
    // Interim responses (102 Processing, 103 Early Hints) precede the real one: wait for it.
    if (statusCode < 200 || this.headDone) return;
    this.headDone = true;
    this.resolveHead({ status: statusCode, headers });
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.abortReason) return;
    this.receivedBytes += chunk.length;
    if (this.receivedBytes > this.maxBytes) {
      this.abort(new BodyCapError(`body is over the ${this.maxBytes}-byte cap`));
      return;
    }
    this.queuedBytes += chunk.length;
    if (this.queuedBytes > this.highWaterBytes) {
      this.abort(new ReaderTooSlowError(`the reader fell ${this.queuedBytes} bytes behind the network (limit ${this.highWaterBytes})`));
      return;
    }
    this.queue.push(chunk);
    this.notify();
  }

  onResponseEnd(): void {
    this.ended = true;
    this.notify();
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.fail(this.abortReason ?? error, false);
  }

  /** Stops the request (deadline, redirect, cap, caller gone); the reader sees `reason`. */
  abort(reason: Error): void {
    if (this.abortReason) return;
    this.abortReason = reason;
    this.fail(reason, true);
    // Without a controller the request is still queued: onRequestStart aborts it when it starts.
    this.controller?.abort(reason);
  }

  /** Body chunks in order; throws the request's error, if any, after the chunks that came before it. */
  async *chunks(): AsyncGenerator<Buffer> {
    for (;;) {
      const chunk = this.queue.shift();
      if (chunk) {
        this.queuedBytes -= chunk.length;
        yield chunk;
        continue;
      }
      if (this.failure) throw this.failure;
      if (this.ended) return;
      await new Promise<void>((r) => (this.wake = r));
    }
  }

  /** `discard`: the caller stopped the request, so what is still queued is of no use to anyone. */
  private fail(error: Error, discard: boolean): void {
    if (this.failure || this.ended) return;
    this.failure = error;
    if (discard) {
      this.queue.length = 0;
      this.queuedBytes = 0;
    }
    if (!this.headDone) {
      this.headDone = true;
      this.rejectHead(error);
    }
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}

// A wake-up call for loops that sleep until something changes: wait() resolves at the next notify(),
// for every waiter at once.

export class Wakeup {
  private waiters: Array<() => void> = [];

  wait(): Promise<void> {
    return new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

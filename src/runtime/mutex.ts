/** Serializes async sections: `await mutex.run(() => ...)` runs one at a time, in order. */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn, fn);
    // Keep the chain alive whether fn resolves or rejects.
    this.tail = result.catch(() => undefined);
    return result;
  }
}

/** One Mutex per key, created on first use. */
export class KeyedMutex {
  private readonly locks = new Map<string, Mutex>();

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    let m = this.locks.get(key);
    if (!m) this.locks.set(key, (m = new Mutex()));
    return m.run(fn);
  }
}

/**
 * A latched wake-up: `notify()` before anyone waits is remembered, so the next `wait()`
 * returns at once. A loop that checks state then waits can never miss a change.
 */
export class Signal {
  private notified = false;
  private waiter?: () => void;

  notify(): void {
    const w = this.waiter;
    this.waiter = undefined;
    if (w) w();
    else this.notified = true;
  }

  wait(): Promise<void> {
    if (this.notified) {
      this.notified = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => (this.waiter = resolve));
  }
}

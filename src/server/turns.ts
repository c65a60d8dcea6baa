/**
 * Work spread over event-loop turns: at most `perTurn` tasks run in one turn, the rest in later
 * turns (FIFO). Answers queued by node:http2 in a turn reach the socket before the next turn's
 * tasks start (its writes go out in the "check" phase before ours), so with many requests
 * arriving in one read the first answers travel — and the client works on them — while later
 * requests are still being served, instead of both sides taking turns on whole batches.
 */
export interface TurnScheduler {
  /** Runs `task` now when this turn has room, otherwise in a later turn, after those queued before it. Tasks must not throw. */
  run(task: () => void): void;
}

export function createTurnScheduler(perTurn: number): TurnScheduler {
  let used = 0;
  let queue: (() => void)[] = [];
  let head = 0;
  let scheduled = false;

  // One setImmediate per busy turn: it starts the next turn's budget and runs what waits.
  const nextTurn = (): void => {
    scheduled = false;
    used = 0;
    while (head < queue.length && used < perTurn) {
      used++;
      queue[head++]!(); // head < length
    }
    if (head === queue.length) {
      queue = [];
      head = 0;
    }
    schedule();
  };
  const schedule = (): void => {
    if (!scheduled && (used > 0 || head < queue.length)) {
      scheduled = true;
      setImmediate(nextTurn);
    }
  };

  return {
    run(task) {
      if (used < perTurn && head === queue.length) {
        used++;
        task();
      } else {
        queue.push(task);
      }
      schedule();
    },
  };
}

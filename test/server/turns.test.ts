/** Work spread over event-loop turns (src/server/turns.ts), on the real event loop. */
import { expect, test } from "vitest";
import { createTurnScheduler } from "../../src/server/turns.js";

const turn = () => new Promise<void>((r) => setImmediate(r));

test("at most perTurn tasks run per turn, in order; the rest run in the following turns", async () => {
  const turns = createTurnScheduler(3);
  const ran: number[] = [];
  for (let i = 0; i < 8; i++) turns.run(() => ran.push(i));
  expect(ran).toEqual([0, 1, 2]);
  await turn();
  expect(ran).toEqual([0, 1, 2, 3, 4, 5]);
  await turn();
  expect(ran).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
});

test("tasks added in a later turn use what is left of that turn's budget, then queue in order", async () => {
  const turns = createTurnScheduler(2);
  const ran: string[] = [];
  for (const x of ["a", "b", "c"]) turns.run(() => ran.push(x));
  await turn(); // "c" ran in this turn: one slot is left
  turns.run(() => ran.push("d"));
  expect(ran).toEqual(["a", "b", "c", "d"]);
  for (const x of ["e", "f", "g"]) turns.run(() => ran.push(x));
  expect(ran).toEqual(["a", "b", "c", "d"]);
  await turn();
  expect(ran).toEqual(["a", "b", "c", "d", "e", "f"]);
  await turn();
  expect(ran).toEqual(["a", "b", "c", "d", "e", "f", "g"]);
});

test("a fresh turn has its whole budget again", async () => {
  const turns = createTurnScheduler(2);
  const ran: number[] = [];
  turns.run(() => ran.push(1));
  turns.run(() => ran.push(2));
  await turn();
  await turn();
  turns.run(() => ran.push(3));
  turns.run(() => ran.push(4));
  expect(ran).toEqual([1, 2, 3, 4]);
});

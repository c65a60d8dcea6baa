/**
 * Polls `check` until it holds; rejects after `ms`, naming `what`. It waits for an outcome and
 * asserts nothing about timing (STYLE.md §6): the bound only keeps a broken case from hanging.
 */
export async function eventually(check: () => boolean | Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

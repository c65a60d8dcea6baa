import { McpError } from "../../src/errors.js";

/** The McpError a promise rejected with; fails when it resolves or rejects with anything else. */
export async function mcpFailure(p: Promise<unknown>): Promise<McpError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof McpError) return e;
    throw new Error(`expected an McpError, got ${String(e)}`, { cause: e });
  }
  throw new Error("expected a failure");
}

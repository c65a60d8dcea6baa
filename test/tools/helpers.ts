/**
 * Shared test helpers for the tools area: a real ToolContext that records events, commands in
 * both input forms, and temporary workspaces under os.tmpdir().
 */
import { readFileSync } from "node:fs";
import { mkdtemp, realpath, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { create, type DescMessage, type JsonObject, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
import { CommandSchema, type Command } from "../../gen/mcp/v1/command_pb.js";
import type { RegisteredTool, ToolContext } from "../../src/tools/index.js";

export interface RecordedEvent {
  type: string;
  data: JsonObject;
}

/** A ToolContext whose events land in `events`. */
export function makeContext(signal: AbortSignal = new AbortController().signal): { ctx: ToolContext; events: RecordedEvent[] } {
  const events: RecordedEvent[] = [];
  return {
    ctx: { signal, commandId: "cmd-1", subject: "tester", emit: (type, data) => events.push({ type, data }) },
    events,
  };
}

export function jsonCommand(tool: string, args: JsonObject): Command {
  return create(CommandSchema, { id: "cmd-1", tool, payload: { case: "arguments", value: args } });
}

export function typedCommand<I extends DescMessage>(tool: string, schema: I, init: MessageInitShape<I>): Command {
  return create(CommandSchema, { id: "cmd-1", tool, payload: { case: "input", value: anyPack(schema, create(schema, init)) } });
}

export function emptyCommand(tool: string): Command {
  return create(CommandSchema, { id: "cmd-1", tool });
}

/** Runs with JSON arguments and returns the JSON output. */
export async function runJson(tool: RegisteredTool, args: JsonObject, ctx: ToolContext = makeContext().ctx): Promise<JsonObject> {
  const result = await tool.run(jsonCommand(tool.name, args), ctx);
  if (result.case !== "output") throw new Error(`expected JSON output, got ${String(result.case)}`);
  return result.value;
}

/** Runs with a typed input and returns the unpacked typed output. */
export async function runTyped<I extends DescMessage, O extends DescMessage>(
  tool: RegisteredTool,
  input: I,
  init: MessageInitShape<I>,
  output: O,
  ctx: ToolContext = makeContext().ctx,
): Promise<MessageShape<O>> {
  const result = await tool.run(typedCommand(tool.name, input, init), ctx);
  if (result.case !== "typedOutput") throw new Error(`expected typed output, got ${String(result.case)}`);
  const unpacked = anyUnpack(result.value, output);
  if (unpacked === undefined) throw new Error(`typed output is not ${output.typeName}`);
  return unpacked;
}

/** A fresh real directory (symlinks resolved, as on macOS /tmp) and its cleanup. */
export async function makeWorkspace(): Promise<{ root: string; cleanup: () => Promise<void> }> {
  const root = await realpath(await mkdtemp(path.join(tmpdir(), "mcp-tools-")));
  return { root, cleanup: () => rm(root, { recursive: true, force: true }) };
}

/**
 * Whether a process is gone: `kill(pid, 0)` fails with ESRCH. A killed grandchild is re-parented
 * to PID 1, and where PID 1 does not reap (minimal container inits, as on our CI machines) it stays
 * a zombie: dead, holding nothing but its pid. On Linux a zombie (`Z` in /proc/<pid>/stat) counts
 * as gone too.
 */
export function processIsGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return e instanceof Error && "code" in e && e.code === "ESRCH";
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Format: `pid (comm) state …`; comm may contain spaces and parentheses, so split after the last ")".
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return false;
  }
}

/**
 * Typed tool calls: the input goes out as `Command.input` (an Any of the tool's input message)
 * and the `typed_output` comes back decoded, so callers work with generated types end to end.
 */
import { create, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
import type { Command, Response } from "../../gen/mcp/v1/command_pb.js";
import {
  EchoInputSchema,
  EchoOutputSchema,
  ExecInputSchema,
  ExecOutputSchema,
  FsListInputSchema,
  FsListOutputSchema,
  FsReadInputSchema,
  FsReadOutputSchema,
  FsSearchInputSchema,
  FsSearchOutputSchema,
  FsWriteInputSchema,
  FsWriteOutputSchema,
} from "../../gen/mcp/tools/v1/tools_pb.js";
import { McpError, fromProtoError } from "../errors.js";
import type { CallOptions, McpSession } from "./client.js";

/**
 * Runs a typed tool on a session: `input` is packed into an Any, the Response's typed output is
 * unpacked as `output`. Rejects with the command's McpError.
 */
export function callTyped<I extends DescMessage, O extends DescMessage>(
  session: McpSession,
  tool: string,
  schemas: { input: I; output: O },
  input: MessageInitShape<I>,
  options: CallOptions = NO_OPTIONS,
): Promise<MessageShape<O>> {
  // A complete message, not an init shape: `execute` sends it as it is (no `create()` copy).
  const command: Command = {
    $typeName: "mcp.v1.Command",
    id: options.id ?? "",
    tool,
    payload: { case: "input", value: anyPack(schemas.input, create(schemas.input, input)) },
    timeoutMs: options.timeoutMs ?? 0,
    contextId: "",
    contextVersion: 0n,
    traceparent: "",
    tracestate: "",
  };
  return session.execute(command, options).then((r) => typedOutput(r, tool, schemas.output));
}

const NO_OPTIONS: CallOptions = Object.freeze({});

function typedOutput<O extends DescMessage>(r: Response, tool: string, output: O): MessageShape<O> {
  const result = r.result;
  if (result.case === "error") throw fromProtoError(result.value);
  const unpacked = result.case === "typedOutput" ? anyUnpack(result.value, output) : undefined;
  if (unpacked === undefined) {
    throw new McpError("invalid_message", `${tool} answered with ${result.case ?? "nothing"}, expected a ${output.typeName}`);
  }
  return unpacked;
}

/** The built-in tools as typed methods on a session (PROTOCOL.md §3, `mcp.tools.v1`). */
export function builtinTools(session: McpSession) {
  const bind =
    <I extends DescMessage, O extends DescMessage>(tool: string, input: I, output: O) =>
    (init: MessageInitShape<I>, options?: CallOptions) =>
      callTyped(session, tool, { input, output }, init, options);
  return {
    echo: bind("echo", EchoInputSchema, EchoOutputSchema),
    fsRead: bind("fs.read", FsReadInputSchema, FsReadOutputSchema),
    fsWrite: bind("fs.write", FsWriteInputSchema, FsWriteOutputSchema),
    fsList: bind("fs.list", FsListInputSchema, FsListOutputSchema),
    fsSearch: bind("fs.search", FsSearchInputSchema, FsSearchOutputSchema),
    exec: bind("exec", ExecInputSchema, ExecOutputSchema),
  };
}

/**
 * The server edge of the error model: an McpError becomes a ConnectError with the §7 status and
 * the `mcp.v1.Error` attached as an error detail, so every language sees the same structure.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorSchema } from "../../gen/mcp/v1/error_pb.js";
import { McpError, toProtoError } from "../errors.js";

/** Any failure as a ConnectError carrying an `mcp.v1.Error` detail when it is ours. */
export function toConnectError(reason: unknown): ConnectError {
  if (reason instanceof McpError) {
    return new ConnectError(reason.message, reason.rpcCode, undefined, [{ desc: ErrorSchema, value: toProtoError(reason) }], reason);
  }
  if (reason instanceof ConnectError) {
    // connect-es raises resource_exhausted itself when a message exceeds readMaxBytes.
    if (reason.code === Code.ResourceExhausted && /readMaxBytes/.test(reason.rawMessage)) {
      return toConnectError(new McpError("message_too_large", reason.rawMessage, { cause: reason }));
    }
    return reason;
  }
  return ConnectError.from(reason, Code.Internal);
}

/** The client edge of the error model: a ConnectError back into an McpError. */
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorSchema } from "../../gen/mcp/v1/error_pb.js";
import { McpError, fromProtoError } from "../errors.js";

/**
 * The `mcp.v1.Error` detail of a failed RPC as an McpError. A ConnectError without one (raised by
 * the transport itself) maps by status; anything else is rethrown unchanged by the caller.
 */
export function fromConnectError(reason: unknown): McpError | undefined {
  if (reason instanceof McpError) return reason;
  if (!(reason instanceof ConnectError)) return undefined;
  const detail = reason.findDetails(ErrorSchema)[0];
  if (detail !== undefined) return fromProtoError(detail);
  switch (reason.code) {
    case Code.ResourceExhausted:
      if (/readMaxBytes|too large|larger than/i.test(reason.rawMessage)) {
        return new McpError("message_too_large", reason.rawMessage, { cause: reason });
      }
      return new McpError("overloaded", reason.rawMessage, { cause: reason });
    case Code.Unauthenticated:
      return new McpError("unauthenticated", reason.rawMessage, { cause: reason });
    case Code.DeadlineExceeded:
      return new McpError("timeout", reason.rawMessage, { cause: reason });
    case Code.Canceled:
      return new McpError("cancelled", reason.rawMessage, { cause: reason });
    // The transport's own word for a connection refused, reset or gone (connect-node maps
    // ECONNREFUSED / ECONNRESET here): a lost connection, worth retrying.
    case Code.Unavailable:
      return new McpError("connection_lost", reason.rawMessage, { cause: reason });
    // connect-es's word for a non-200 answer without a Connect error body is "HTTP <status>",
    // coded by an HTTP mapping that has no 413: a proxy's body limit, as in grpc-trailers.ts.
    case Code.Unknown:
      return /^HTTP 413\b/.test(reason.rawMessage) ? new McpError("message_too_large", `${reason.rawMessage}: the request is larger than a proxy on the way accepts`, { cause: reason }) : undefined;
    default:
      return undefined;
  }
}

/** Runs `fn`, turning a ConnectError into an McpError where it carries one. */
export async function mapErrors<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw fromConnectError(e) ?? e;
  }
}

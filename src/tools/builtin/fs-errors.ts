/**
 * Maps Node file-system errors to `McpError`s for the fs tools: a path that does not exist or has
 * the wrong type is the caller's mistake (`invalid_argument`); anything else is the tool's own
 * failure (`tool_failed`). Messages name the user's path, never file contents.
 */
import { McpError, isMcpError } from "../../errors.js";

/** The `McpError` for a failed fs operation on `userPath` (from input field `field`). */
export function fsError(e: unknown, field: string, userPath: string): McpError {
  if (isMcpError(e)) return e;
  const code = e instanceof Error && "code" in e ? e.code : undefined;
  const shown = userPath === "" ? "." : userPath;
  switch (code) {
    case "ENOENT":
      return new McpError("invalid_argument", `${field} "${shown}" does not exist`, { field, cause: e });
    case "ENOTDIR":
      return new McpError("invalid_argument", `${field} "${shown}" is not a directory`, { field, cause: e });
    case "EISDIR":
      return new McpError("invalid_argument", `${field} "${shown}" is a directory`, { field, cause: e });
    case "EACCES":
    case "EPERM":
      return new McpError("tool_failed", `the operating system denied access to "${shown}"`, { cause: e });
    default:
      return new McpError("tool_failed", `${field} "${shown}": ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}

/**
 * Path safety for the file and process tools: every user-supplied path is resolved against the
 * workspace root and refused unless it stays inside it, symlinks included.
 *
 * The check is done on real paths, so a link inside the root that points out of it is refused.
 * What it cannot close is the window between the check and the use (another process swapping a
 * directory for a symlink in between); the tools run with the server's own rights, and the root
 * is meant to be a workspace only trusted parties write to.
 */
import { lstat, readlink, realpath } from "node:fs/promises";
import path from "node:path";
import { McpError } from "../errors.js";

/** Options of `resolveInRoot`. */
export interface ResolveInRootOptions {
  /**
   * The input field the path came from, named in `invalid_argument` errors.
   * @default "path"
   */
  field?: string;
}

// Linux gives up after 40 links (SYMLOOP_MAX); so do we, for dangling chains we follow by hand.
const MAX_LINK_HOPS = 40;

/**
 * Resolves `userPath` (relative to `root`; "" and "." mean the root) to an absolute real path
 * inside the real `root`. The path need not exist: for a new file, the nearest existing ancestor
 * is resolved and checked instead, and dangling symlinks on the way are followed by hand.
 *
 * Rejects with `McpError`:
 * - `invalid_argument` (field `options.field`) for a path containing a NUL byte;
 * - `permission_denied` for an absolute path, a path whose `..` climbs out of the root, or one
 *   that a symlink leads out of the root.
 * Messages name the user's path, never file contents.
 */
export async function resolveInRoot(root: string, userPath: string, options: ResolveInRootOptions = {}): Promise<string> {
  const field = options.field ?? "path";
  if (userPath.includes("\0")) {
    throw new McpError("invalid_argument", `${field} must not contain NUL bytes`, { field });
  }
  if (path.isAbsolute(userPath) || path.win32.isAbsolute(userPath)) {
    throw new McpError("permission_denied", `${field} "${userPath}" must be relative to the workspace root`);
  }
  const realRoot = await realpath(root);
  const joined = path.resolve(realRoot, userPath);
  if (!isInside(realRoot, joined)) {
    throw new McpError("permission_denied", `${field} "${userPath}" is outside the workspace root`);
  }
  const real = await realpathAllowMissing(joined);
  if (real === undefined || !isInside(realRoot, real)) {
    throw new McpError("permission_denied", `${field} "${userPath}" resolves outside the workspace root`);
  }
  return real;
}

/** Whether `candidate` is `root` or below it (both absolute and normalised). */
export function isInside(root: string, candidate: string): boolean {
  const rel = path.relative(root, candidate);
  return rel === "" || (!isDotDotSegment(rel) && !path.isAbsolute(rel));
}

// `..foo` is a legal name inside the root; only a leading `..` segment climbs out.
function isDotDotSegment(rel: string): boolean {
  return rel === ".." || rel.startsWith(`..${path.sep}`);
}

/** A path relative to `root` with `/` separators, as the tools report paths. */
export function toRootRelative(root: string, absolute: string): string {
  return path.relative(root, absolute).split(path.sep).join("/");
}

/**
 * The real path of `absolute`, where a missing tail is appended to the real path of its nearest
 * existing ancestor. Undefined when a chain of dangling links is too long to follow.
 */
async function realpathAllowMissing(absolute: string): Promise<string | undefined> {
  let current = absolute;
  for (let hops = 0; hops <= MAX_LINK_HOPS; hops++) {
    const tail: string[] = [];
    let candidate = current;
    for (;;) {
      try {
        return path.join(await realpath(candidate), ...tail);
      } catch (e) {
        if (!isMissing(e)) throw e;
      }
      // realpath failed; if the entry itself exists it is a dangling symlink, whose target a new
      // file would be created at: follow it by hand so that target is what gets checked.
      const link = await lstat(candidate).catch((e: unknown) => {
        if (isMissing(e)) return undefined;
        throw e;
      });
      if (link?.isSymbolicLink() === true) {
        const target = path.resolve(path.dirname(candidate), await readlink(candidate));
        current = path.join(target, ...tail);
        break;
      }
      const parent = path.dirname(candidate);
      if (parent === candidate) return path.join(candidate, ...tail);
      tail.unshift(path.basename(candidate));
      candidate = parent;
    }
  }
  return undefined;
}

function isMissing(e: unknown): boolean {
  const code = e instanceof Error && "code" in e ? e.code : undefined;
  return code === "ENOENT" || code === "ENOTDIR";
}

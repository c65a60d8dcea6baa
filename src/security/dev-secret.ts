/**
 * The development HS256 secret `mcp serve` uses when no key is configured (ARCHITECTURE.md
 * "State and storage": a newcomer needs no server of any kind). It lives in the state folder,
 * readable by its owner only: other local users are in the threat model (docs/security.md).
 */
import { randomBytes } from "node:crypto";
import { chmod, link, mkdir, readFile, stat, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** The outcome of `loadOrCreateDevSecret`. */
export interface DevSecret {
  /** 32 random bytes, base64url (43 characters); use it as `TokenVerifierOptions.secret`. */
  secret: string;
  /** Whether this call created it. */
  created: boolean;
  /** The file it is kept in: `<stateDir>/dev-secret`. */
  path: string;
}

/**
 * Read `<stateDir>/dev-secret`, or create it: 32 random bytes as base64url, file mode 0600, in a
 * directory created with mode 0700. Refuses a secret file that other users could read or that
 * belongs to someone else, because such a secret may already be known to them.
 */
export async function loadOrCreateDevSecret(stateDir: string): Promise<DevSecret> {
  const path = join(stateDir, "dev-secret");
  await mkdir(stateDir, { recursive: true, mode: 0o700 });

  const existing = await readSecret(path);
  if (existing !== undefined) return { secret: existing, created: false, path };

  const secret = randomBytes(32).toString("base64url");
  // Write a private temporary file, then hard-link it into place: link() fails if the target
  // exists, so two servers starting at once agree on one secret, and no reader ever sees a
  // half-written file.
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(tmp, `${secret}\n`, { mode: 0o600, flag: "wx" });
  try {
    await chmod(tmp, 0o600); // writeFile's mode is filtered by the umask; make it exact
    await link(tmp, path);
  } catch (e) {
    if (!(e instanceof Error && "code" in e && e.code === "EEXIST")) throw e;
    const other = await readSecret(path);
    if (other === undefined) throw e;
    return { secret: other, created: false, path };
  } finally {
    await unlink(tmp).catch(() => {
      // Best effort: a leftover temporary file holds a secret nobody uses.
    });
  }
  return { secret, created: true, path };
}

async function readSecret(path: string): Promise<string | undefined> {
  let st;
  try {
    st = await stat(path);
  } catch (e) {
    if (e instanceof Error && "code" in e && e.code === "ENOENT") return undefined;
    throw e;
  }
  if ((st.mode & 0o077) !== 0) {
    throw new Error(
      `dev secret ${path} is readable or writable by other users (mode ${(st.mode & 0o777).toString(8)}); ` +
        `delete it to generate a new one`,
    );
  }
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new Error(`dev secret ${path} belongs to another user (uid ${st.uid}); delete it to generate a new one`);
  }
  const secret = (await readFile(path, "utf8")).trim();
  if (!/^[A-Za-z0-9_-]{43,}$/.test(secret)) {
    throw new Error(`dev secret ${path} is not a base64url secret of at least 32 bytes; delete it to generate a new one`);
  }
  return secret;
}

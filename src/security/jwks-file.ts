/**
 * A JSON Web Key Set read from a file, re-read when the file changes, so keys rotate without a
 * restart (PROTOCOL.md §5: "asymmetric keys … from a JWKS file or URL with rotation").
 *
 * Change detection is a `stat` per lookup (mtime, size, inode): cheap next to a signature check,
 * needs no watcher to clean up, and sees atomic `rename`-style replacement. An unknown `kid` also
 * forces a re-read, at most once per cooldown, for file systems with coarse timestamps.
 */
import { readFileSync, statSync, type Stats } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { createLocalJWKSet, errors, type JWTVerifyGetKey } from "jose";
import { McpError } from "../errors.js";

/** Options of `createFileJWKSet`. */
export interface FileJWKSetOptions {
  /**
   * Least time between two re-reads caused by an unknown `kid` (a changed file is always re-read).
   * @default 30000
   */
  cooldownMs?: number;
  /**
   * The clock, in epoch milliseconds.
   * @default Date.now
   */
  now?: () => number;
}

/**
 * @private A key resolver for `jwtVerify` over the JWKS file at `path`. Reads the file once now
 * and throws `TypeError` naming the file when it is missing or not a public-key JWKS.
 */
export function createFileJWKSet(path: string, options: FileJWKSetOptions = {}): JWTVerifyGetKey {
  const cooldownMs = options.cooldownMs ?? 30_000;
  const now = options.now ?? Date.now;

  let stamp: string;
  let local: JWTVerifyGetKey;
  let loadedAt: number;
  try {
    const st = statSync(path);
    local = parseKeySet(readFileSync(path, "utf8"));
    stamp = stampOf(st);
    loadedAt = now();
  } catch (cause) {
    throw new TypeError(`JWKS file ${path}: ${describe(cause)}`, { cause });
  }

  // One read at a time: concurrent verifications wait for the same reload.
  let reloading: Promise<void> | undefined;
  function reload(st?: Stats): Promise<void> {
    reloading ??= (async () => {
      const s = st ?? (await stat(path));
      const next = parseKeySet(await readFile(path, "utf8"));
      // Only commit after a successful parse: a half-written file is retried on the next lookup
      // instead of being remembered as "current" (fail closed until it is whole).
      local = next;
      stamp = stampOf(s);
      loadedAt = now();
    })().finally(() => {
      reloading = undefined;
    });
    return reloading;
  }

  async function refreshIfChanged(): Promise<void> {
    try {
      const st = await stat(path);
      if (stampOf(st) !== stamp) await reload(st);
    } catch (cause) {
      // The message crosses the wire to an unauthenticated client: no server paths in it.
      throw new McpError("unauthenticated", "token verification keys are unavailable", { cause });
    }
  }

  return async (header, token) => {
    await refreshIfChanged();
    try {
      return await local(header, token);
    } catch (e) {
      if (!(e instanceof errors.JWKSNoMatchingKey) || now() - loadedAt < cooldownMs) throw e;
      try {
        await reload();
      } catch (cause) {
        throw new McpError("unauthenticated", "token verification keys are unavailable", { cause });
      }
      return local(header, token);
    }
  };
}

function stampOf(st: Stats): string {
  return `${st.ino}:${st.size}:${st.mtimeMs}`;
}

/**
 * Parse and check a key set. Symmetric (`oct`) and private keys have no place in a public key
 * set: a shared secret there is the algorithm-confusion hole of RFC 8725 §2.1, and a private key
 * would be published to everyone who can read the file.
 */
function parseKeySet(text: string): JWTVerifyGetKey {
  let jwks: unknown;
  try {
    jwks = JSON.parse(text);
  } catch (cause) {
    throw new TypeError(`not valid JSON (${describe(cause)})`, { cause });
  }
  if (typeof jwks !== "object" || jwks === null || !Array.isArray((jwks as { keys?: unknown }).keys)) {
    throw new TypeError('expected a JSON Web Key Set: an object with a "keys" array');
  }
  // The cast is checked just above: `keys` is an array.
  const keys = (jwks as { keys: unknown[] }).keys;
  keys.forEach((key, i) => {
    if (typeof key !== "object" || key === null) throw new TypeError(`keys[${i}] is not an object`);
    if ((key as { kty?: unknown }).kty === "oct") {
      throw new TypeError(`keys[${i}] is a symmetric ("oct") key; a JWKS must hold public keys only`);
    }
    if ("d" in key) throw new TypeError(`keys[${i}] contains private key material ("d")`);
  });
  // The cast is checked above; jose validates each key's members itself.
  return createLocalJWKSet(jwks as Parameters<typeof createLocalJWKSet>[0]);
}

function describe(reason: unknown): string {
  return reason instanceof Error ? reason.message : String(reason);
}

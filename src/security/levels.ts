/**
 * Security levels (PROTOCOL.md §5): how a session's level is computed from what the client asked
 * for, what its token allows and what its transport gives, plus small conversions.
 *
 * The generated `SecurityLevel` enum is ordered `UNSPECIFIED(0) < LOW(1) < STANDARD(2) < HIGH(3)`,
 * so comparisons are numeric. As an *outcome* of `grantedLevel`, `UNSPECIFIED` means "nothing was
 * granted": the session has not reached the server's minimum and may only send handshake,
 * authentication and ping (PROTOCOL.md §4 step 2).
 */
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";

/** The inputs of `grantedLevel`. */
export interface GrantedLevelInput {
  /**
   * What the client asked for (`Handshake.security_level`). `UNSPECIFIED` is read as `STANDARD`,
   * the level every authenticated session gets by default: HIGH is granted only when a client
   * asks for it (least privilege), and a client without a token still ends up at LOW through
   * `tokenMax`.
   */
  requested: SecurityLevel;
  /**
   * The highest level the verified token allows (`VerifiedToken.maxLevel`), or `undefined` when
   * the session has no valid token (which caps it at LOW: LOW means unauthenticated).
   */
  tokenMax: SecurityLevel | undefined;
  /** Whether the connection is TLS. Cleartext caps the level at STANDARD (PROTOCOL.md §5). */
  transportSecure: boolean;
  /**
   * Whether the server admits LOW (unauthenticated) sessions. The server must only set this when
   * it is configured for it *and* bound to loopback (PROTOCOL.md §5).
   */
  allowLow: boolean;
}

/**
 * A session's level: the lowest of what it asked, what its token allows and what its transport
 * gives (PROTOCOL.md §5). Returns `UNSPECIFIED` when that lowest level is LOW and the server does
 * not admit LOW, i.e. the session is not authenticated yet.
 */
export function grantedLevel(input: GrantedLevelInput): SecurityLevel {
  const requested = input.requested === SecurityLevel.UNSPECIFIED ? SecurityLevel.STANDARD : input.requested;
  const token = input.tokenMax ?? SecurityLevel.LOW;
  const transport = input.transportSecure ? SecurityLevel.HIGH : SecurityLevel.STANDARD;
  // An UNSPECIFIED token level must not count as "no cap", so clamp to LOW. The cast is safe:
  // min/max of enum members is one of those members.
  const level = Math.max(SecurityLevel.LOW, Math.min(requested, token, transport)) as SecurityLevel;
  if (level === SecurityLevel.LOW && !input.allowLow) return SecurityLevel.UNSPECIFIED;
  return level;
}

/** Whether `level` satisfies `minimum` (numeric order; UNSPECIFIED is below everything). */
export function levelAtLeast(level: SecurityLevel, minimum: SecurityLevel): boolean {
  return level >= minimum;
}

/** The lower-case name used in config, claims and messages: "low", "standard", "high". */
export type LevelName = "low" | "standard" | "high";

/** `"low" | "standard" | "high"` for a level, `"unspecified"` for anything else. */
export function levelName(level: SecurityLevel): LevelName | "unspecified" {
  switch (level) {
    case SecurityLevel.LOW:
      return "low";
    case SecurityLevel.STANDARD:
      return "standard";
    case SecurityLevel.HIGH:
      return "high";
    default:
      return "unspecified";
  }
}

/**
 * The level named `name` (case-insensitive): "low", "standard" or "high".
 * Throws `TypeError` for anything else, because names come from configuration.
 */
export function parseLevel(name: string): SecurityLevel {
  switch (name.trim().toLowerCase()) {
    case "low":
      return SecurityLevel.LOW;
    case "standard":
      return SecurityLevel.STANDARD;
    case "high":
      return SecurityLevel.HIGH;
    default:
      throw new TypeError(`security level must be "low", "standard" or "high", got ${JSON.stringify(name)}`);
  }
}

/**
 * The one place a request is allowed or refused (PROTOCOL.md §5): authentication first, then the
 * security level, then the role policy. Every refusal is an `McpError` and one audit entry.
 */
import { SecurityLevel, type Principal } from "../../gen/mcp/v1/types_pb.js";
import { McpError, type McpErrorCode } from "../errors.js";
import type { AuditEntry, AuditSink } from "./audit.js";
import { levelName } from "./levels.js";
import type { Policy } from "./policy.js";

/** Who is asking. */
export interface AuthSubject {
  /** The verified principal; absent for an unauthenticated (LOW) session. */
  principal?: Principal;
  /** The session's granted level (`grantedLevel`); UNSPECIFIED when nothing was granted yet. */
  level: SecurityLevel;
  /** The session, for the audit trail. */
  sessionId?: string;
}

/** Options of `createAuthorizer`. */
export interface AuthorizerOptions {
  /** Roles → permissions. */
  policy: Policy;
  /**
   * Where denials go.
   * @default no audit
   */
  audit?: AuditSink;
  /**
   * The roles of a caller without a principal. Such a caller only exists at LOW, which the
   * server admits only when configured for it and bound to loopback (PROTOCOL.md §5), and it
   * still only reaches tools whose minimum level is LOW.
   * @default ["viewer"]
   */
  anonymousRoles?: readonly string[];
  /**
   * The clock for audit timestamps, in epoch milliseconds.
   * @default Date.now
   */
  now?: () => number;
}

/** Checks permissions and levels. */
export interface Authorizer {
  /**
   * Throw unless `subject` may do `action`, which needs `permission` and at least `minLevel`.
   * Throws `McpError`: `unauthenticated` (no principal, or no level at all, where more than LOW
   * is needed), `insufficient_security_level`, or `permission_denied`. Each denial is audited.
   *
   * `minLevel` UNSPECIFIED is read as STANDARD (a tool that forgot to declare a level is not
   * open to anonymous callers), and any `context:` permission needs at least STANDARD
   * ("context access needs STANDARD", PROTOCOL.md §5).
   */
  require(subject: AuthSubject, permission: string, minLevel: SecurityLevel, action: string): void;
  /** Whether `require` would pass, without auditing (for `ListTools` filtering). */
  allows(subject: AuthSubject, permission: string, minLevel: SecurityLevel): boolean;
}

interface Denial {
  code: McpErrorCode;
  message: string;
  required: SecurityLevel;
  roles?: string[];
}

/** Build an authorizer over a policy. */
export function createAuthorizer(options: AuthorizerOptions): Authorizer {
  const { policy, audit } = options;
  const anonymousRoles = [...(options.anonymousRoles ?? ["viewer"])];
  const now = options.now ?? Date.now;

  function decide(subject: AuthSubject, permission: string, minLevel: SecurityLevel): Denial | undefined {
    let required = minLevel === SecurityLevel.UNSPECIFIED ? SecurityLevel.STANDARD : minLevel;
    if (permission.startsWith("context:") && required < SecurityLevel.STANDARD) required = SecurityLevel.STANDARD;
    const needs = levelName(required);

    if (subject.level < SecurityLevel.LOW || (subject.principal === undefined && required > SecurityLevel.LOW)) {
      return { code: "unauthenticated", message: `authentication required (needs level ${needs})`, required };
    }
    if (subject.level < required) {
      return {
        code: "insufficient_security_level",
        message: `needs security level ${needs}, the session has ${levelName(subject.level)}`,
        required,
      };
    }
    const roles = subject.principal?.roles ?? anonymousRoles;
    if (!policy.check(roles, permission).allowed) {
      const who = subject.principal === undefined ? "anonymous caller" : `roles [${roles.join(", ")}]`;
      return { code: "permission_denied", message: `permission ${permission} is not granted to ${who}`, required, roles: [...roles] };
    }
    return undefined;
  }

  return {
    require(subject, permission, minLevel, action) {
      const denial = decide(subject, permission, minLevel);
      if (denial === undefined) return;
      if (audit !== undefined) {
        const entry: AuditEntry = {
          time: new Date(now()).toISOString(),
          event: "denied",
          action,
          permission,
          level: levelName(subject.level),
          requiredLevel: levelName(denial.required),
          reason: denial.code,
          message: denial.message,
        };
        if (subject.principal !== undefined) entry.subject = subject.principal.subject;
        if (subject.sessionId !== undefined) entry.sessionId = subject.sessionId;
        if (denial.roles !== undefined) entry.roles = denial.roles;
        try {
          audit(entry);
        } catch {
          // Sinks must not throw (see AuditSink). If one does anyway, the caller still gets the
          // denial's own code rather than the sink's error.
        }
      }
      throw new McpError(denial.code, `${action}: ${denial.message}`);
    },
    allows(subject, permission, minLevel) {
      return decide(subject, permission, minLevel) === undefined;
    },
  };
}

/**
 * Roles → permissions (PROTOCOL.md §5). A permission is a string of `:`-separated segments:
 * `tool:fs.read`, `context:<id>:read`, `context:<id>:write`, `sessions:admin`. A role grants a list
 * of patterns over those strings:
 *
 * - a segment `*` matches exactly one whole segment (`context:*:read` matches
 *   `context:proj-1:read`, not `context:proj-1:write`);
 * - a trailing segment `*` matches the rest, one segment or more (`tool:*` matches `tool:fs.read`);
 * - a bare `*` matches every permission;
 * - `*` inside a segment matches any characters within that segment (`tool:fs.*` matches
 *   `tool:fs.read`, not `tool:fsx.read`).
 *
 * Unknown roles grant nothing. There are no deny rules: a permission is allowed when any of the
 * caller's roles grants it.
 */
import { readFile } from "node:fs/promises";

/** Role name → granted permission patterns. */
export type RoleTable = Readonly<Record<string, readonly string[]>>;

/** A policy in code or in a file (`{ "roles": { "name": ["tool:fs.read", …] } }`). */
export interface PolicyDefinition {
  /**
   * Roles to define. A role named here replaces the built-in role of the same name entirely (so
   * `viewer` can be narrowed as well as widened); other built-in roles stay.
   * @default {}
   */
  roles?: RoleTable;
}

/** The outcome of `Policy.check`. */
export interface PolicyDecision {
  allowed: boolean;
  /** When allowed: the granting pattern and role, e.g. `tool:* (role developer)`. */
  rule?: string;
}

/** Decides which roles hold which permissions. */
export interface Policy {
  /**
   * Whether any of `roles` grants `permission`, and by which rule. Decisions are remembered per
   * `roles` array, so a roles array must not change once checked (a principal's never does).
   */
  check(roles: readonly string[], permission: string): PolicyDecision;
  /** The effective roles (built-ins merged with the definition), for display and docs. */
  readonly roles: RoleTable;
}

/**
 * The built-in roles. `viewer` reads; `developer` runs any tool and reads and writes any context;
 * `admin` may do everything, including `sessions:admin`.
 */
export const BUILTIN_ROLES: RoleTable = Object.freeze({
  viewer: Object.freeze(["tool:fs.read", "tool:fs.list", "tool:fs.search", "tool:echo", "context:*:read"]),
  developer: Object.freeze(["tool:*", "context:*:read", "context:*:write"]),
  admin: Object.freeze(["*"]),
});

type Matcher = (segments: readonly string[]) => boolean;

interface CompiledRule {
  match: Matcher;
  /** What `check` answers when this rule grants (one frozen object, not one per check). */
  decision: PolicyDecision;
}

const DENIED: PolicyDecision = Object.freeze({ allowed: false });

/**
 * Decisions remembered per roles array (a principal's roles are one array for its whole life, so
 * every command of a session after the first is a lookup, not a pattern match). Bounded: context
 * permissions name client-chosen ids.
 */
const DECISIONS_PER_ROLES = 256;

/**
 * Build a policy from the built-in roles and `definition`. Throws `TypeError` naming the role and
 * pattern when the definition is malformed.
 */
export function createPolicy(definition: PolicyDefinition = {}): Policy {
  checkDefinition(definition);
  const table: Record<string, readonly string[]> = { ...BUILTIN_ROLES };
  for (const [role, patterns] of Object.entries(definition.roles ?? {})) {
    table[role] = Object.freeze([...patterns]);
  }
  const rules = new Map<string, CompiledRule[]>();
  for (const [role, patterns] of Object.entries(table)) {
    rules.set(
      role,
      patterns.map((pattern) => ({ match: compilePattern(pattern), decision: Object.freeze({ allowed: true, rule: `${pattern} (role ${role})` }) })),
    );
  }
  const roles: RoleTable = Object.freeze(table);

  function decide(callerRoles: readonly string[], permission: string): PolicyDecision {
    if (permission === "") return DENIED;
    const segments = permission.split(":");
    for (const role of callerRoles) {
      // Map lookup, not `table[role]`: a role named "__proto__" or "toString" must grant nothing.
      for (const rule of rules.get(role) ?? []) {
        if (rule.match(segments)) return rule.decision;
      }
    }
    return DENIED;
  }

  const remembered = new WeakMap<readonly string[], Map<string, PolicyDecision>>();
  return {
    roles,
    check(callerRoles, permission) {
      let decisions = remembered.get(callerRoles);
      if (decisions === undefined) remembered.set(callerRoles, (decisions = new Map()));
      let d = decisions.get(permission);
      if (d === undefined) {
        d = decide(callerRoles, permission);
        if (decisions.size >= DECISIONS_PER_ROLES) decisions.clear();
        decisions.set(permission, d);
      }
      return d;
    },
  };
}

/**
 * Read a policy file (JSON, `{ "roles": { … } }`) and merge it over the built-in roles. Errors
 * name the file and the problem.
 */
export async function loadPolicyFile(path: string): Promise<Policy> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (cause) {
    throw new Error(`policy file ${path}: cannot read it (${cause instanceof Error ? cause.message : String(cause)})`, {
      cause,
    });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new TypeError(`policy file ${path}: invalid JSON (${cause instanceof Error ? cause.message : String(cause)})`, {
      cause,
    });
  }
  try {
    // The shape is checked by createPolicy (checkDefinition) right away; the cast only lets it in.
    return createPolicy(json as PolicyDefinition);
  } catch (cause) {
    throw new TypeError(`policy file ${path}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

function checkDefinition(definition: unknown): void {
  if (typeof definition !== "object" || definition === null || Array.isArray(definition)) {
    throw new TypeError('policy must be an object like { "roles": { "name": ["tool:fs.read"] } }');
  }
  for (const key of Object.keys(definition)) {
    if (key !== "roles") throw new TypeError(`unknown key ${JSON.stringify(key)} (expected "roles")`);
  }
  const roles: unknown = (definition as { roles?: unknown }).roles;
  if (roles === undefined) return;
  if (typeof roles !== "object" || roles === null || Array.isArray(roles)) {
    throw new TypeError('"roles" must be an object mapping role names to arrays of permission patterns');
  }
  for (const [role, patterns] of Object.entries(roles)) {
    if (role === "") throw new TypeError("role names must not be empty");
    if (!Array.isArray(patterns)) {
      throw new TypeError(`role ${JSON.stringify(role)} must be an array of permission patterns`);
    }
    for (const pattern of patterns) {
      if (typeof pattern !== "string") {
        throw new TypeError(`role ${JSON.stringify(role)}: every permission pattern must be a string`);
      }
      const problem = patternProblem(pattern);
      if (problem !== undefined) {
        throw new TypeError(`role ${JSON.stringify(role)}: pattern ${JSON.stringify(pattern)} ${problem}`);
      }
    }
  }
}

function patternProblem(pattern: string): string | undefined {
  if (pattern === "") return "is empty";
  if (/\s/.test(pattern)) return "contains whitespace";
  if (pattern.split(":").some((s) => s === "")) return "has an empty segment";
  if (pattern.includes("**")) return 'uses "**"; a trailing ":*" already matches the rest';
  return undefined;
}

function compilePattern(pattern: string): Matcher {
  const parts = pattern.split(":");
  const segmentMatchers = parts.map((part): ((s: string) => boolean) => {
    if (part === "*") return () => true;
    if (!part.includes("*")) return (s) => s === part;
    const re = new RegExp(`^${part.split("*").map(escapeRegExp).join(".*")}$`);
    return (s) => re.test(s);
  });
  const last = parts.length - 1;
  const trailingWildcard = parts[last] === "*";
  return (segments) => {
    if (trailingWildcard ? segments.length < parts.length : segments.length !== parts.length) return false;
    for (let i = 0; i < last; i++) {
      // Index is in range: segments has at least parts.length entries here.
      if (!segmentMatchers[i]!(segments[i]!)) return false;
    }
    return trailingWildcard || segmentMatchers[last]!(segments[last]!);
  };
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

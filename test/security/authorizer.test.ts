import { create } from "@bufbuild/protobuf";
import { describe, expect, test } from "vitest";
import { PrincipalSchema, SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { createAuthorizer, createJsonAuditSink, createPolicy, type AuditEntry, type AuthSubject } from "../../src/security/index.js";

const { UNSPECIFIED, LOW, STANDARD, HIGH } = SecurityLevel;
const NOW = Date.UTC(2030, 0, 1);
const TIME = new Date(NOW).toISOString();
const alice = (roles: string[]) => create(PrincipalSchema, { subject: "alice", roles });

function setup(anonymousRoles?: string[]) {
  const entries: AuditEntry[] = []; // observing the sink, not mocking anything
  const authorizer = createAuthorizer({
    policy: createPolicy(),
    audit: (e) => entries.push(e),
    now: () => NOW,
    ...(anonymousRoles === undefined ? {} : { anonymousRoles }),
  });
  return { authorizer, entries };
}

describe("denials: one McpError and one audit entry each (who, what, why)", () => {
  const cases: {
    name: string;
    subject: AuthSubject;
    permission: string;
    minLevel: SecurityLevel;
    action: string;
    code: string;
    entry: Partial<AuditEntry>;
  }[] = [
    // no principal where more than LOW is needed
    {
      name: "anonymous caller, STANDARD tool",
      subject: { level: LOW, sessionId: "s1" },
      permission: "tool:fs.read",
      minLevel: STANDARD,
      action: "tool fs.read",
      code: "unauthenticated",
      entry: { sessionId: "s1", level: "low", requiredLevel: "standard" },
    },
    // a session that has not been granted any level yet (PROTOCOL.md §4 step 2)
    {
      name: "nothing granted yet, LOW tool",
      subject: { level: UNSPECIFIED, sessionId: "s1" },
      permission: "tool:echo",
      minLevel: LOW,
      action: "tool echo",
      code: "unauthenticated",
      entry: { level: "unspecified", requiredLevel: "low" },
    },
    // a tool that forgot its level is read as STANDARD, never as open
    {
      name: "anonymous caller, tool without a declared level",
      subject: { level: LOW },
      permission: "tool:echo",
      minLevel: UNSPECIFIED,
      action: "tool echo",
      code: "unauthenticated",
      entry: { requiredLevel: "standard" },
    },
    // context access needs STANDARD whatever the caller passes (PROTOCOL.md §5)
    {
      name: "anonymous caller, context read declared LOW",
      subject: { level: LOW },
      permission: "context:proj-1:read",
      minLevel: LOW,
      action: "context proj-1 get",
      code: "unauthenticated",
      entry: { requiredLevel: "standard" },
    },
    // HIGH tools need a HIGH session (token allowing high + TLS)
    {
      name: "STANDARD session, HIGH tool",
      subject: { principal: alice(["admin"]), level: STANDARD, sessionId: "s2" },
      permission: "tool:exec",
      minLevel: HIGH,
      action: "tool exec",
      code: "insufficient_security_level",
      entry: { subject: "alice", sessionId: "s2", level: "standard", requiredLevel: "high" },
    },
    // a principal at LOW (asked for LOW) still cannot use STANDARD tools
    {
      name: "principal at LOW, STANDARD tool",
      subject: { principal: alice(["developer"]), level: LOW },
      permission: "tool:fs.read",
      minLevel: STANDARD,
      action: "tool fs.read",
      code: "insufficient_security_level",
      entry: { subject: "alice", level: "low" },
    },
    // roles that do not grant the permission
    {
      name: "viewer writing a file",
      subject: { principal: alice(["viewer"]), level: STANDARD, sessionId: "s3" },
      permission: "tool:fs.write",
      minLevel: STANDARD,
      action: "tool fs.write",
      code: "permission_denied",
      entry: { subject: "alice", sessionId: "s3", roles: ["viewer"], permission: "tool:fs.write" },
    },
    {
      name: "developer administering sessions",
      subject: { principal: alice(["developer"]), level: HIGH },
      permission: "sessions:admin",
      minLevel: STANDARD,
      action: "sessions list",
      code: "permission_denied",
      entry: { subject: "alice", roles: ["developer"] },
    },
    {
      name: "viewer writing a context",
      subject: { principal: alice(["viewer"]), level: STANDARD },
      permission: "context:proj-1:write",
      minLevel: STANDARD,
      action: "context proj-1 update",
      code: "permission_denied",
      entry: { roles: ["viewer"] },
    },
    {
      name: "token with no roles",
      subject: { principal: alice([]), level: STANDARD },
      permission: "tool:echo",
      minLevel: STANDARD,
      action: "tool echo",
      code: "permission_denied",
      entry: { roles: [] },
    },
    // anonymous LOW callers get the anonymous roles (default viewer), not more
    {
      name: "anonymous caller, LOW tool outside viewer",
      subject: { level: LOW },
      permission: "tool:fs.write",
      minLevel: LOW,
      action: "tool fs.write",
      code: "permission_denied",
      entry: { roles: ["viewer"] },
    },
  ];
  for (const c of cases) {
    test(`${c.name} -> ${c.code}`, () => {
      const { authorizer, entries } = setup();
      let caught: unknown;
      try {
        authorizer.require(c.subject, c.permission, c.minLevel, c.action);
      } catch (e) {
        caught = e;
      }
      expect(caught).toMatchObject({ name: "McpError", kind: "SECURITY", code: c.code });
      expect((caught as Error).message.startsWith(`${c.action}: `)).toBe(true);
      expect(entries).toHaveLength(1);
      expect(entries[0]).toMatchObject({
        time: TIME,
        event: "denied",
        action: c.action,
        permission: c.permission,
        reason: c.code,
        message: (caught as Error).message.slice(c.action.length + 2),
        ...c.entry,
      });
      if (c.subject.principal === undefined) expect(entries[0]).not.toHaveProperty("subject");
      // allows() agrees and never audits
      expect(authorizer.allows(c.subject, c.permission, c.minLevel)).toBe(false);
      expect(entries).toHaveLength(1);
    });
  }
});

describe("allowed requests", () => {
  const cases: { name: string; subject: AuthSubject; permission: string; minLevel: SecurityLevel; anonymousRoles?: string[] }[] = [
    { name: "viewer reads a file", subject: { principal: alice(["viewer"]), level: STANDARD }, permission: "tool:fs.read", minLevel: STANDARD },
    { name: "developer writes a context", subject: { principal: alice(["developer"]), level: STANDARD }, permission: "context:p:write", minLevel: STANDARD },
    { name: "admin runs a HIGH tool over a HIGH session", subject: { principal: alice(["admin"]), level: HIGH }, permission: "tool:exec", minLevel: HIGH },
    { name: "anonymous LOW caller, LOW viewer tool", subject: { level: LOW }, permission: "tool:echo", minLevel: LOW },
    { name: "anonymous roles configured", subject: { level: LOW }, permission: "tool:fs.write", minLevel: LOW, anonymousRoles: ["developer"] },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const { authorizer, entries } = setup(c.anonymousRoles);
      expect(() => authorizer.require(c.subject, c.permission, c.minLevel, "act")).not.toThrow();
      expect(authorizer.allows(c.subject, c.permission, c.minLevel)).toBe(true);
      expect(entries).toEqual([]);
    });
  }

  test("anonymousRoles [] leaves anonymous callers nothing", () => {
    const { authorizer } = setup([]);
    expect(authorizer.allows({ level: LOW }, "tool:echo", LOW)).toBe(false);
  });
});

describe("audit sinks", () => {
  test("a throwing sink does not change the denial", () => {
    const authorizer = createAuthorizer({
      policy: createPolicy(),
      audit: () => {
        throw new Error("disk full");
      },
    });
    expect(() => authorizer.require({ principal: alice(["viewer"]), level: STANDARD }, "tool:exec", STANDARD, "tool exec")).toThrow(
      expect.objectContaining({ kind: "SECURITY", code: "permission_denied" }),
    );
  });

  test("createJsonAuditSink writes one JSON line per entry", () => {
    const chunks: string[] = [];
    const sink = createJsonAuditSink({ write: (c: string) => chunks.push(c) });
    const authorizer = createAuthorizer({ policy: createPolicy(), audit: sink, now: () => NOW });
    for (const perm of ["tool:exec", "sessions:admin"]) {
      expect(() => authorizer.require({ principal: alice(["viewer"]), level: STANDARD, sessionId: "s9" }, perm, STANDARD, `do ${perm}`)).toThrow();
    }
    expect(chunks).toHaveLength(2);
    for (const chunk of chunks) {
      expect(chunk.endsWith("\n")).toBe(true);
      expect(chunk.slice(0, -1)).not.toContain("\n");
    }
    expect(JSON.parse(chunks[0] ?? "")).toEqual({
      audit: "mcp",
      time: TIME,
      event: "denied",
      subject: "alice",
      sessionId: "s9",
      action: "do tool:exec",
      permission: "tool:exec",
      roles: ["viewer"],
      level: "standard",
      requiredLevel: "standard",
      reason: "permission_denied",
      message: "permission tool:exec is not granted to roles [viewer]",
    });
  });
});

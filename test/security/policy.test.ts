import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { BUILTIN_ROLES, createPolicy, loadPolicyFile } from "../../src/security/index.js";

describe("built-in roles and wildcards", () => {
  const policy = createPolicy({ roles: { fs: ["tool:fs.*"], ctx: ["context:proj-*:write"], deep: ["a:*:c:*"] } });
  const cases: { roles: string[]; permission: string; rule?: string }[] = [
    // viewer: named read-only tools and reading any context
    { roles: ["viewer"], permission: "tool:fs.read", rule: "tool:fs.read (role viewer)" },
    { roles: ["viewer"], permission: "tool:echo", rule: "tool:echo (role viewer)" },
    { roles: ["viewer"], permission: "tool:fs.write" },
    { roles: ["viewer"], permission: "tool:exec" },
    { roles: ["viewer"], permission: "context:proj-1:read", rule: "context:*:read (role viewer)" },
    // a middle `*` is exactly one segment: read is not write, and ids with ":" are not matched
    { roles: ["viewer"], permission: "context:proj-1:write" },
    { roles: ["viewer"], permission: "context:a:b:read" },
    { roles: ["viewer"], permission: "sessions:admin" },
    // developer: every tool (a trailing `*` takes the rest), every context, no admin
    { roles: ["developer"], permission: "tool:fs.write", rule: "tool:* (role developer)" },
    { roles: ["developer"], permission: "tool:plugin:deep.tool", rule: "tool:* (role developer)" },
    { roles: ["developer"], permission: "context:proj-1:write", rule: "context:*:write (role developer)" },
    { roles: ["developer"], permission: "sessions:admin" },
    // `tool:*` needs at least one segment after "tool"
    { roles: ["developer"], permission: "tool" },
    // admin: a bare `*` matches everything
    { roles: ["admin"], permission: "sessions:admin", rule: "* (role admin)" },
    { roles: ["admin"], permission: "anything:at:all", rule: "* (role admin)" },
    // unknown roles (including prototype names) grant nothing; no roles grant nothing
    { roles: ["root"], permission: "tool:echo" },
    { roles: ["__proto__", "toString", "constructor"], permission: "tool:echo" },
    { roles: [], permission: "tool:echo" },
    // several roles: the first granting rule is reported
    { roles: ["root", "viewer", "developer"], permission: "tool:fs.read", rule: "tool:fs.read (role viewer)" },
    // `*` inside a segment stays inside that segment
    { roles: ["fs"], permission: "tool:fs.read", rule: "tool:fs.* (role fs)" },
    { roles: ["fs"], permission: "tool:fsx.read" },
    { roles: ["fs"], permission: "tool:fs.read:more" },
    { roles: ["ctx"], permission: "context:proj-9:write", rule: "context:proj-*:write (role ctx)" },
    { roles: ["ctx"], permission: "context:other:write" },
    { roles: ["deep"], permission: "a:b:c:d:e", rule: "a:*:c:* (role deep)" },
    { roles: ["deep"], permission: "a:b:x:d" },
    // regex metacharacters in patterns are literal
    { roles: ["fs"], permission: "tool:fsXread" },
    // the empty permission is never granted
    { roles: ["admin"], permission: "" },
  ];
  for (const { roles, permission, rule } of cases) {
    test(`[${roles.join(",")}] ${permission || "(empty)"} -> ${rule === undefined ? "denied" : "allowed"}`, () => {
      const got = policy.check(roles, permission);
      expect(got).toEqual(rule === undefined ? { allowed: false } : { allowed: true, rule });
    });
  }
});

describe("remembered decisions", () => {
  test("the same roles array asked again, and past the remembered bound, gets the same answers", () => {
    const policy = createPolicy({ roles: { even: ["context:*0:read", "context:*2:read", "context:*4:read", "context:*6:read", "context:*8:read"] } });
    const roles = ["even"];
    const expected = (i: number) => (i % 2 === 0 ? { allowed: true, rule: `context:*${i % 10}:read (role even)` } : { allowed: false });
    // 1,000 distinct permissions on one roles array: more than are remembered per array.
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 1000; i++) expect(policy.check(roles, `context:c${i}:read`)).toEqual(expected(i));
    }
    // Another array with other roles is decided on its own.
    expect(policy.check(["viewer"], "context:c1:read")).toEqual({ allowed: true, rule: "context:*:read (role viewer)" });
  });
});

describe("definitions", () => {
  test("a role in the definition replaces the built-in of that name; others stay", () => {
    const policy = createPolicy({ roles: { viewer: ["tool:echo"] } });
    expect(policy.check(["viewer"], "tool:fs.read")).toEqual({ allowed: false });
    expect(policy.check(["viewer"], "tool:echo").allowed).toBe(true);
    expect(policy.check(["developer"], "tool:fs.write").allowed).toBe(true);
    expect(policy.roles["developer"]).toEqual(BUILTIN_ROLES["developer"]);
  });

  const invalid: { name: string; definition: unknown; message: string }[] = [
    { name: "not an object", definition: [], message: "policy must be an object" },
    { name: "unknown top-level key", definition: { role: {} }, message: 'unknown key "role"' },
    { name: "roles not an object", definition: { roles: ["viewer"] }, message: '"roles" must be an object' },
    { name: "role not an array", definition: { roles: { ops: "tool:*" } }, message: 'role "ops" must be an array' },
    { name: "pattern not a string", definition: { roles: { ops: [1] } }, message: 'role "ops": every permission pattern must be a string' },
    { name: "empty pattern", definition: { roles: { ops: [""] } }, message: 'pattern "" is empty' },
    { name: "empty segment", definition: { roles: { ops: ["tool::x"] } }, message: "empty segment" },
    { name: "double star", definition: { roles: { ops: ["tool:**"] } }, message: '"**"' },
    { name: "whitespace", definition: { roles: { ops: ["tool: fs.read"] } }, message: "whitespace" },
  ];
  for (const c of invalid) {
    test(`${c.name} -> TypeError`, () => {
      // The cast feeds deliberately malformed input, as a JSON file could.
      expect(() => createPolicy(c.definition as never)).toThrow(TypeError);
      expect(() => createPolicy(c.definition as never)).toThrow(c.message);
    });
  }
});

describe("loadPolicyFile", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "mcp-policy-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("merges the file over the built-ins", async () => {
    const path = join(dir, "ok.json");
    await writeFile(path, JSON.stringify({ roles: { ops: ["sessions:admin", "tool:exec"] } }));
    const policy = await loadPolicyFile(path);
    expect(policy.check(["ops"], "sessions:admin")).toEqual({ allowed: true, rule: "sessions:admin (role ops)" });
    expect(policy.check(["viewer"], "tool:fs.read").allowed).toBe(true);
  });

  const bad: { name: string; content?: string; message: string }[] = [
    { name: "missing file", message: "cannot read it" },
    { name: "bad JSON", content: "{ roles: }", message: "invalid JSON" },
    { name: "bad shape", content: JSON.stringify({ roles: { ops: "tool:*" } }), message: 'role "ops" must be an array' },
  ];
  for (const c of bad) {
    test(`${c.name}: the error names the file and the problem`, async () => {
      const path = join(dir, `${c.name.replace(/\s/g, "-")}.json`);
      if (c.content !== undefined) await writeFile(path, c.content);
      await expect(loadPolicyFile(path)).rejects.toThrow(`policy file ${path}: `);
      await expect(loadPolicyFile(path)).rejects.toThrow(c.message);
    });
  }
});

import { describe, expect, test } from "vitest";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";
import { grantedLevel, levelAtLeast, levelName, parseLevel, type GrantedLevelInput } from "../../src/security/index.js";

const { UNSPECIFIED, LOW, STANDARD, HIGH } = SecurityLevel;

describe("grantedLevel: the lowest of asked, token and transport (PROTOCOL.md §5)", () => {
  const cases: (GrantedLevelInput & { want: SecurityLevel })[] = [
    // HIGH needs all three: asked for, allowed by the token, and TLS
    { requested: HIGH, tokenMax: HIGH, transportSecure: true, allowLow: false, want: HIGH },
    { requested: HIGH, tokenMax: HIGH, transportSecure: false, allowLow: false, want: STANDARD },
    { requested: HIGH, tokenMax: STANDARD, transportSecure: true, allowLow: false, want: STANDARD },
    { requested: STANDARD, tokenMax: HIGH, transportSecure: true, allowLow: false, want: STANDARD },
    // UNSPECIFIED reads as STANDARD: HIGH is only ever granted when asked for
    { requested: UNSPECIFIED, tokenMax: HIGH, transportSecure: true, allowLow: false, want: STANDARD },
    { requested: UNSPECIFIED, tokenMax: STANDARD, transportSecure: false, allowLow: false, want: STANDARD },
    // no token: LOW, which only a server that admits LOW grants; otherwise nothing (UNSPECIFIED)
    { requested: UNSPECIFIED, tokenMax: undefined, transportSecure: false, allowLow: true, want: LOW },
    { requested: UNSPECIFIED, tokenMax: undefined, transportSecure: false, allowLow: false, want: UNSPECIFIED },
    { requested: HIGH, tokenMax: undefined, transportSecure: true, allowLow: true, want: LOW },
    { requested: STANDARD, tokenMax: undefined, transportSecure: true, allowLow: false, want: UNSPECIFIED },
    // asking for LOW with a token gives LOW (the client's choice), if the server admits it
    { requested: LOW, tokenMax: HIGH, transportSecure: true, allowLow: true, want: LOW },
    { requested: LOW, tokenMax: HIGH, transportSecure: true, allowLow: false, want: UNSPECIFIED },
    // a token level of UNSPECIFIED is no cap at all: it counts as LOW
    { requested: HIGH, tokenMax: UNSPECIFIED, transportSecure: true, allowLow: true, want: LOW },
  ];
  for (const { want, ...input } of cases) {
    test(`asked ${levelName(input.requested)}, token ${input.tokenMax === undefined ? "none" : levelName(input.tokenMax)}, ${input.transportSecure ? "tls" : "cleartext"}, allowLow ${input.allowLow} -> ${levelName(want)}`, () => {
      expect(grantedLevel(input)).toBe(want);
    });
  }
});

describe("conversions", () => {
  const names: [SecurityLevel, string][] = [
    [LOW, "low"],
    [STANDARD, "standard"],
    [HIGH, "high"],
  ];
  for (const [level, name] of names) {
    test(`${name} round-trips`, () => {
      expect(levelName(level)).toBe(name);
      expect(parseLevel(name)).toBe(level);
      expect(parseLevel(` ${name.toUpperCase()} `)).toBe(level);
    });
  }
  test("UNSPECIFIED has a name but cannot be parsed", () => {
    expect(levelName(UNSPECIFIED)).toBe("unspecified");
    for (const bad of ["unspecified", "", "medium", "2"]) expect(() => parseLevel(bad)).toThrow(TypeError);
  });
  test("levelAtLeast follows LOW < STANDARD < HIGH", () => {
    expect(levelAtLeast(HIGH, STANDARD)).toBe(true);
    expect(levelAtLeast(STANDARD, STANDARD)).toBe(true);
    expect(levelAtLeast(LOW, STANDARD)).toBe(false);
    expect(levelAtLeast(UNSPECIFIED, LOW)).toBe(false);
  });
});

/**
 * The package's entry points: `machine-context-protocol` is exactly `/server` plus `/client`
 * (values and types), so an export added to one list cannot silently miss the others; and
 * `/client` pulls in no server-side module.
 */
import ts from "typescript";
import { expect, test } from "vitest";

const ENTRIES = { root: "src/index.ts", server: "src/entry/server.ts", client: "src/entry/client.ts" } as const;

function exportsOf(): Record<keyof typeof ENTRIES, string[]> {
  // Export names only: no lib, no @types (the cost of a full program here is parsing those).
  const program = ts.createProgram(Object.values(ENTRIES), { module: ts.ModuleKind.Node16, moduleResolution: ts.ModuleResolutionKind.Node16, noEmit: true, noLib: true, types: [] });
  const checker = program.getTypeChecker();
  const names = (file: string) => {
    const sym = checker.getSymbolAtLocation(program.getSourceFile(file)!)!;
    return checker.getExportsOfModule(sym).map((s) => s.name).sort();
  };
  return { root: names(ENTRIES.root), server: names(ENTRIES.server), client: names(ENTRIES.client) };
}

test("the root entry exports exactly what /server and /client export together", () => {
  const e = exportsOf();
  const union = [...new Set([...e.server, ...e.client])].sort();
  const missing = e.root.filter((n) => !union.includes(n));
  // An export of the root that is in neither list belongs in src/entry/server.ts or src/entry/client.ts.
  expect(missing, "exported by src/index.ts but by neither src/entry/server.ts nor src/entry/client.ts").toEqual([]);
  expect(union.filter((n) => !e.root.includes(n)), "exported by an entry but not by src/index.ts").toEqual([]);
  expect(e.client).toContain("createMcpClient");
  expect(e.server).toContain("createMcpServer");
  expect(e.client).not.toContain("createMcpServer");
});

test("/client imports no module of src/server, src/session, src/context, src/security, src/tools or src/optional", () => {
  // The import graph as the compiler resolves it (static imports and re-exports), without type-checking.
  const options: ts.CompilerOptions = { module: ts.ModuleKind.Node16, moduleResolution: ts.ModuleResolutionKind.Node16 };
  const seen = new Set<string>();
  const walk = (file: string): void => {
    if (seen.has(file) || file.includes("/node_modules/")) return;
    seen.add(file);
    for (const imp of ts.preProcessFile(ts.sys.readFile(file)!, true, true).importedFiles) {
      const r = ts.resolveModuleName(imp.fileName, file, options, ts.sys).resolvedModule;
      if (r !== undefined && !r.isExternalLibraryImport) walk(r.resolvedFileName);
    }
  };
  walk(ts.sys.resolvePath(ENTRIES.client));
  const files = [...seen];
  expect(files.some((f) => f.endsWith("/src/client/client.ts"))).toBe(true);
  expect(files.filter((f) => /\/src\/(server|session|context|security|tools|optional)\//.test(f))).toEqual([]);
});

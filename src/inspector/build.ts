/**
 * Builds the inspector's static assets into `dist/inspector/`: index.html and app.css as they
 * are, app.ts bundled for the browser by esbuild as inspector.bundle.js (ESM, minified, no eval — the page's CSP allows
 * scripts from 'self' only). `npm run build:inspector` runs this file.
 */
import { existsSync } from "node:fs";
import { copyFile, mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

/** The package root: the nearest folder above this file with a package.json (from src/ or a build). */
function packageRoot(): string {
  for (let dir = here; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "package.json"))) return dir;
    if (dirname(dir) === dir) return join(here, "..", "..");
  }
}

/** Where the built assets go: `dist/inspector/` at the package root. */
export const INSPECTOR_DIST = join(packageRoot(), "dist", "inspector");

/** The files the endpoint serves, all built by `buildInspector`. */
export const INSPECTOR_FILES = ["index.html", "app.css", "inspector.bundle.js"] as const;

/** Builds the assets into `outDir`. Needs esbuild (a devDependency), loaded only here. */
export async function buildInspector(outDir: string = INSPECTOR_DIST): Promise<void> {
  const { build } = await import("esbuild");
  await mkdir(outDir, { recursive: true });
  await build({
    entryPoints: [join(here, "app.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    legalComments: "none",
    // Not app.js: a tsc build of src/ into dist/ writes dist/inspector/app.js (unbundled) itself.
    outfile: join(outDir, "inspector.bundle.js"),
    logLevel: "warning",
  });
  for (const f of ["index.html", "app.css"]) await copyFile(join(here, f), join(outDir, f));
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  buildInspector().then(
    () => process.stderr.write(`inspector built into ${INSPECTOR_DIST}\n`),
    (e: unknown) => {
      process.stderr.write(`inspector build failed: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}

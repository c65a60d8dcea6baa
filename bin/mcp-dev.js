#!/usr/bin/env node
// The `mcp` command straight from the sources, for this repository only (tests, `npm run mcp`):
// TypeScript through tsx's loader, so an edit needs no build. Not published; the package's
// `mcp` is bin/mcp.js, which runs the compiled dist/.
import { register } from "tsx/esm/api";

register();
await import("../src/cli/main.ts");

#!/usr/bin/env node
// The `mcp` command of the installed package: the compiled CLI (`npm run build` makes dist/).
import "../dist/src/cli/main.js";

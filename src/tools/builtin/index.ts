/**
 * The built-in tools: `echo`, `fs.read`, `fs.write`, `fs.list`, `fs.search` and (opt-in) `exec`,
 * all confined to one workspace root (workspace.ts).
 */
import type { RegisteredTool } from "../registered-tool.js";
import { createEchoTool } from "./echo.js";
import { createExecTool } from "./exec.js";
import { createFsListTool } from "./fs-list.js";
import { createFsReadTool } from "./fs-read.js";
import { createFsSearchTool } from "./fs-search.js";
import { createFsWriteTool } from "./fs-write.js";
import { resolveBuiltinToolsOptions, type BuiltinToolsOptions } from "./options.js";

export type { BuiltinToolName, BuiltinToolsOptions, ExecToolOptions } from "./options.js";

/**
 * Creates the built-in tools, ready to register. `exec` is included only with
 * `exec: { enabled: true }`. Throws `TypeError` for invalid options.
 *
 * @example
 * const registry = createToolRegistry();
 * for (const tool of createBuiltinTools({ root: workspace, exec: { enabled: true } })) registry.register(tool);
 */
export function createBuiltinTools(options: BuiltinToolsOptions = {}): RegisteredTool[] {
  const opts = resolveBuiltinToolsOptions(options);
  const tools = [
    createEchoTool(opts.securityLevels.echo),
    createFsReadTool(opts),
    createFsWriteTool(opts),
    createFsListTool(opts),
    createFsSearchTool(opts),
  ];
  if (opts.exec.enabled) tools.push(createExecTool(opts));
  return tools;
}

/**
 * The tool registry: name → `RegisteredTool`. The session core looks tools up here; it owns
 * permissions, timeouts and the in-flight table, the registry only holds definitions.
 */
import type { RegisteredTool } from "./registered-tool.js";

/** The set of tools a server offers. */
export interface ToolRegistry {
  /** Adds a tool. Throws `TypeError` when a tool of that name is already registered. */
  register(tool: RegisteredTool): void;
  /** The tool called `name`, if any. */
  get(name: string): RegisteredTool | undefined;
  /** Every tool, in registration order. */
  list(): readonly RegisteredTool[];
  /**
   * Names a tool this server could offer but does not (e.g. a built-in switched off), with why
   * and how to switch it on: `unknown_tool` for it says so. Registering the name later wins.
   */
  withhold(name: string, reason: string): void;
  /** Why `name` is not offered, when it was withheld. */
  withheldReason(name: string): string | undefined;
}

/**
 * Creates an empty registry.
 *
 * @example
 * const registry = createToolRegistry();
 * for (const tool of createBuiltinTools({ root: "/work" })) registry.register(tool);
 */
export function createToolRegistry(): ToolRegistry {
  const tools = new Map<string, RegisteredTool>();
  const withheld = new Map<string, string>();
  // Cached so ListTools on a hot path does not copy the map each time.
  let snapshot: readonly RegisteredTool[] = [];
  return {
    register(tool) {
      if (tools.has(tool.name)) throw new TypeError(`tool "${tool.name}" is already registered`);
      tools.set(tool.name, tool);
      withheld.delete(tool.name);
      snapshot = Object.freeze([...tools.values()]);
    },
    withhold(name, reason) {
      if (!tools.has(name)) withheld.set(name, reason);
    },
    withheldReason(name) {
      return withheld.get(name);
    },
    get(name) {
      return tools.get(name);
    },
    list() {
      return snapshot;
    },
  };
}

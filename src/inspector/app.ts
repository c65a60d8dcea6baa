/**
 * The inspector page's script (bundled for the browser by build.ts). It talks to the server that
 * served it over the Connect protocol with `@connectrpc/connect-web` — the same RPCs as every
 * other client, with the pasted token as `Authorization: Bearer`. The token lives in this tab's
 * sessionStorage only. No framework: a few DOM helpers.
 */
import { fromJson, toJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema, timestampMs } from "@bufbuild/protobuf/wkt";
import { ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AdminService } from "../../gen/mcp/v1/admin_pb.js";
import { CommandService, type ToolDescriptor } from "../../gen/mcp/v1/command_pb.js";
import { ContextService, type ContextEntry } from "../../gen/mcp/v1/context_pb.js";
import { ErrorSchema } from "../../gen/mcp/v1/error_pb.js";
import { EventService } from "../../gen/mcp/v1/event_pb.js";
import { SecurityLevel } from "../../gen/mcp/v1/types_pb.js";

const TOKEN_KEY = "mcp-inspector-token";

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`the page has no #${id}`);
  return el as T; // each id is in index.html with the element type its caller names
};

function el<K extends keyof HTMLElementTagNameMap>(tag: K, props: Partial<HTMLElementTagNameMap[K]> = {}, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
}

/** An RPC failure as the page shows it: our `kind code: message` when the server attached it (PROTOCOL.md §7). */
function describe(e: unknown): string {
  if (e instanceof ConnectError) {
    const [detail] = e.findDetails(ErrorSchema);
    if (detail !== undefined) return `${detail.code}: ${detail.message}`;
    return `${e.code}: ${e.rawMessage}`;
  }
  return e instanceof Error ? e.message : String(e);
}

function show(target: HTMLElement, text: string, ok: boolean): void {
  target.textContent = text;
  target.className = `status ${ok ? "ok" : "error"}`;
}

// The token: from the URL fragment (`mcp serve` prints /inspector#token=…; a fragment never
// leaves the browser), else this tab's sessionStorage. Never localStorage: it ends with the tab.
const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromHash !== null) {
  sessionStorage.setItem(TOKEN_KEY, fromHash);
  history.replaceState(null, "", location.pathname);
}
let token = sessionStorage.getItem(TOKEN_KEY) ?? "";

const bearer: Interceptor = (next) => (req) => {
  if (token !== "") req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};
const transport = createConnectTransport({ baseUrl: location.origin, interceptors: [bearer] });
const commands = createClient(CommandService, transport);
const contexts = createClient(ContextService, transport);
const events = createClient(EventService, transport);
const admin = createClient(AdminService, transport);

// ---- token -------------------------------------------------------------------------------

function claimsOf(jwt: string): { sub?: string; roles?: string[]; exp?: number } | undefined {
  try {
    const part = jwt.split(".")[1] ?? "";
    return JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/"))) as { sub?: string; roles?: string[]; exp?: number };
  } catch {
    return undefined;
  }
}

function showWho(): void {
  const c = token === "" ? undefined : claimsOf(token);
  $("whoami").textContent = c === undefined ? (token === "" ? "no token" : "token set") : `${c.sub ?? "?"} (${(c.roles ?? []).join(", ")})`;
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = $<HTMLInputElement>("token");
  token = input.value.trim();
  input.value = "";
  sessionStorage.setItem(TOKEN_KEY, token);
  showWho();
  void loadTools();
});
$("forget").addEventListener("click", () => {
  token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  showWho();
});

// ---- tools -------------------------------------------------------------------------------

interface PropertySchema {
  type?: string | string[];
  enum?: JsonValue[];
  description?: string;
  default?: JsonValue;
}

async function loadTools(): Promise<void> {
  const list = $("tools");
  list.replaceChildren();
  try {
    const { tools } = await commands.listTools({});
    for (const t of tools) list.append(el("button", { type: "button", textContent: t.name, title: t.description, onclick: () => openTool(t) }));
    if (tools.length === 0) list.append(el("span", { className: "muted", textContent: "no tools for this token" }));
  } catch (e) {
    list.append(el("span", { className: "error", textContent: describe(e) }));
  }
}

/** A form field per property of the tool's input schema; anything not a scalar is JSON. */
function fieldFor(name: string, s: PropertySchema, required: boolean): HTMLElement {
  const type = Array.isArray(s.type) ? s.type.find((t) => t !== "null") : s.type;
  let input: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;
  if (s.enum !== undefined) {
    input = el("select", {}, ...(required ? [] : [el("option", { value: "", textContent: "" })]), ...s.enum.map((v) => el("option", { value: JSON.stringify(v), textContent: String(v) })));
    input.dataset["kind"] = "json";
  } else if (type === "boolean") {
    input = el("input", { type: "checkbox", checked: s.default === true });
    input.dataset["kind"] = "boolean";
  } else if (type === "integer" || type === "number") {
    input = el("input", { type: "number", step: type === "integer" ? "1" : "any" });
    input.dataset["kind"] = "number";
  } else if (type === "string") {
    input = el("input", { type: "text", spellcheck: false });
    input.dataset["kind"] = "string";
  } else {
    input = el("textarea", { placeholder: "JSON" });
    input.dataset["kind"] = "json";
  }
  input.name = name;
  input.required = required && type !== "boolean";
  const label = el("label", {}, el("span", { textContent: `${name}${required ? " *" : ""}` }), input);
  if (s.description !== undefined) label.append(el("span", { className: "hint muted", textContent: s.description }));
  return label;
}

/** The form's values as the tool's JSON arguments (empty optional fields left out). */
function argumentsOf(form: HTMLFormElement): JsonObject {
  const args: JsonObject = {};
  for (const input of Array.from(form.querySelectorAll<HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement>("[name]"))) {
    const kind = input.dataset["kind"];
    if (kind === "boolean") {
      args[input.name] = (input as HTMLInputElement).checked;
      continue;
    }
    if (input.value === "") continue;
    if (kind === "number") args[input.name] = Number(input.value);
    else if (kind === "string") args[input.name] = input.value;
    else args[input.name] = JSON.parse(input.value) as JsonValue;
  }
  return args;
}

let running: AbortController | undefined;

function openTool(t: ToolDescriptor): void {
  for (const b of Array.from($("tools").querySelectorAll("button"))) b.classList.toggle("selected", b.textContent === t.name);
  $("call").hidden = false;
  $("call-title").textContent = t.name;
  $("call-description").textContent = t.description;
  const form = $<HTMLFormElement>("call-form");
  const schema = (t.inputSchema ?? {}) as { properties?: Record<string, PropertySchema>; required?: string[] };
  const required = new Set(schema.required ?? []);
  form.replaceChildren(
    ...Object.entries(schema.properties ?? {}).map(([name, s]) => fieldFor(name, s, required.has(name))),
    el("div", {}, el("button", { type: "submit", id: "call-run", textContent: "Call" }), el("button", { type: "button", id: "call-cancel", textContent: "Cancel", onclick: () => running?.abort() })),
  );
  $("call-events").replaceChildren();
  $("call-response").textContent = "";
  form.onsubmit = (ev) => {
    ev.preventDefault();
    void runTool(t.name, form);
  };
}

async function runTool(tool: string, form: HTMLFormElement): Promise<void> {
  const log = $("call-events");
  const out = $("call-response");
  log.replaceChildren();
  let args: JsonObject;
  try {
    args = argumentsOf(form);
  } catch (e) {
    out.textContent = `the arguments are not valid JSON: ${describe(e)}`;
    return;
  }
  out.textContent = "running…";
  running?.abort();
  const abort = new AbortController();
  running = abort;
  try {
    // ExecuteStream: the command's events as they happen, then its one Response.
    for await (const m of commands.executeStream({ tool, payload: { case: "arguments", value: args } }, { signal: abort.signal })) {
      if (m.message.case === "event") {
        const e = m.message.value;
        log.append(el("li", { textContent: `${e.type} ${JSON.stringify(e.data ?? {})}` }));
        log.scrollTop = log.scrollHeight;
      } else if (m.message.case === "response") {
        const r = m.message.value;
        out.textContent = r.result.case === "output" ? JSON.stringify(r.result.value, null, 2) : JSON.stringify(r.result.value ?? null);
        out.dataset["state"] = "done";
      }
    }
  } catch (e) {
    out.textContent = abort.signal.aborted ? "cancelled" : describe(e);
    out.dataset["state"] = "error";
  } finally {
    if (running === abort) running = undefined;
  }
}

$("refresh-tools").addEventListener("click", () => void loadTools());

// ---- context -----------------------------------------------------------------------------

let watching: AbortController | undefined;
let contextId = "";
let version = 0n;
const entries = new Map<string, ContextEntry>();

function renderContext(changed: Set<string>): void {
  $("context-version").textContent = version.toString();
  // The version the next compare-and-set expects: the one shown, unless the user types another.
  $<HTMLInputElement>("edit-expected").value = version.toString();
  const body = $("context-entries").querySelector("tbody");
  if (body === null) return;
  body.replaceChildren(
    ...[...entries.values()]
      .sort((a, b) => a.key.localeCompare(b.key))
      .map((e) =>
        el(
          "tr",
          { className: changed.has(e.key) ? "changed" : "" },
          el("td", { textContent: e.key }),
          el("td", { textContent: e.value === undefined ? "null" : JSON.stringify(toJson(ValueSchema, e.value)) }),
          el("td", { textContent: e.version.toString() }),
          el("td", { textContent: e.updatedBy, title: e.updatedAt === undefined ? "" : new Date(timestampMs(e.updatedAt)).toISOString() }),
        ),
      ),
  );
}

async function openContext(id: string): Promise<void> {
  watching?.abort();
  const abort = new AbortController();
  watching = abort;
  contextId = id;
  version = 0n;
  entries.clear();
  renderContext(new Set());
  const status = $("context-status");
  show(status, `watching ${id}`, true);
  try {
    // WatchContext: a snapshot now, then one delta per version, in order (PROTOCOL.md §8).
    for await (const s of contexts.watchContext({ contextId: id, knownVersion: 0n, watch: true }, { signal: abort.signal })) {
      if (s.full) entries.clear();
      const changed = new Set<string>();
      for (const e of s.entries) {
        entries.set(e.key, e);
        changed.add(e.key);
      }
      for (const k of s.deletedKeys) entries.delete(k);
      version = s.toVersion;
      renderContext(changed);
    }
  } catch (e) {
    if (!abort.signal.aborted) show(status, describe(e), false);
  }
}

$("context-open").addEventListener("submit", (ev) => {
  ev.preventDefault();
  void openContext($<HTMLInputElement>("context-id").value.trim());
});

$("context-edit").addEventListener("submit", (ev) => {
  ev.preventDefault();
  void (async () => {
    const status = $("context-status");
    if (contextId === "") return show(status, "open a context first", false);
    const key = $<HTMLInputElement>("edit-key").value;
    let value: JsonValue;
    try {
      value = JSON.parse($<HTMLInputElement>("edit-value").value) as JsonValue;
    } catch (e) {
      return show(status, `the value is not valid JSON: ${describe(e)}`, false);
    }
    // Compare-and-set: with the box ticked, the update applies only at that version (PROTOCOL.md §8).
    const expected = $<HTMLInputElement>("edit-expected").value;
    const expectedVersion = $<HTMLInputElement>("edit-cas").checked ? BigInt(/^\d+$/.test(expected) ? expected : version.toString()) : 0n;
    try {
      const r = await contexts.updateContext({ contextId, expectedVersion, ops: [{ op: { case: "put", value: { key, value: fromJson(ValueSchema, value) } } }] });
      show(status, `${contextId} is now at version ${r.version}`, true);
    } catch (e) {
      const conflict = e instanceof ConnectError && e.findDetails(ErrorSchema)[0]?.code === "version_conflict";
      show(status, conflict ? `conflict — ${describe(e)}; the table shows the current entries` : describe(e), false);
    }
  })();
});

// ---- messages by seq ---------------------------------------------------------------------

let following: AbortController | undefined;

$("events-open").addEventListener("submit", (ev) => {
  ev.preventDefault();
  following?.abort();
  const abort = new AbortController();
  following = abort;
  const log = $("events");
  log.replaceChildren();
  const sessionId = $<HTMLInputElement>("events-session").value.trim();
  void (async () => {
    try {
      for await (const e of events.subscribe({ sessionId, afterSeq: 0n, types: [] }, { signal: abort.signal })) {
        const about = e.commandId !== "" ? ` command ${e.commandId}` : e.contextId !== "" ? ` context ${e.contextId}` : "";
        log.append(el("li", { value: Number(e.seq), textContent: `#${e.seq} ${e.type}${about} ${JSON.stringify(e.data ?? {})}` }));
        log.scrollTop = log.scrollHeight;
      }
    } catch (e) {
      if (!abort.signal.aborted) log.append(el("li", { className: "error", textContent: describe(e) }));
    }
  })();
});

// ---- sessions (admin) --------------------------------------------------------------------

async function loadSessions(): Promise<void> {
  const body = $("sessions").querySelector("tbody");
  const status = $("sessions-status");
  if (body === null) return;
  body.replaceChildren();
  try {
    const { sessions } = await admin.listSessions({});
    for (const s of sessions) {
      const revoke = el("button", {
        type: "button",
        textContent: "Revoke",
        onclick: () =>
          void admin.revokeSession({ sessionId: s.sessionId }).then(
            () => {
              show(status, `revoked ${s.sessionId}`, true);
              void loadSessions();
            },
            (e: unknown) => show(status, describe(e), false),
          ),
      });
      body.append(
        el(
          "tr",
          {},
          el("td", { textContent: s.sessionId }),
          el("td", { textContent: s.principal === undefined ? "(anonymous)" : `${s.principal.subject} (${s.principal.roles.join(", ")})` }),
          el("td", { textContent: SecurityLevel[s.securityLevel] ?? String(s.securityLevel) }),
          el("td", { textContent: s.connected ? "yes" : "detached" }),
          el("td", { textContent: s.lastSeq.toString() }),
          el("td", {}, revoke),
        ),
      );
    }
    show(status, `${sessions.length} session(s)`, true);
  } catch (e) {
    show(status, describe(e), false);
  }
}

$("refresh-sessions").addEventListener("click", () => void loadSessions());

showWho();
if (token !== "") void loadTools();

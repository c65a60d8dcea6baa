/**
 * `/inspector`: the inspector page, served by `mcp serve` from `dist/inspector/` (build.ts).
 * Safe to leave on: only callers `inspectorAllow` admits (loopback by default) get it; on a
 * loopback server the Host must be a localhost name (no DNS rebinding) and a cross-origin
 * request is refused; a strict Content-Security-Policy allows scripts, styles and connections
 * from the page's own origin only (no inline script). The page's RPCs are the ordinary Connect
 * API on the same origin, authorised by the pasted token, so no CORS headers are needed.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { pathOf, type HttpEndpoint, type HttpRequest, type HttpResponse } from "../server/http-endpoints.js";
import { INSPECTOR_DIST, INSPECTOR_FILES } from "./build.js";

/** Options of `createInspectorEndpoint`. */
export interface InspectorEndpointOptions {
  /**
   * Who gets the page: `loopback`, `off`, `any`, or comma-separated client IP addresses.
   * @default "loopback"
   */
  allow?: string;
  /**
   * The address the server is bound to; on loopback the Host header must name localhost.
   * @default "127.0.0.1"
   */
  bindAddress?: string;
  /**
   * Where the built assets are.
   * @default dist/inspector at the package root
   */
  dir?: string;
  /**
   * Build the assets on the first request when they are missing (needs esbuild, a devDependency).
   * @default true
   */
  buildIfMissing?: boolean;
}

const CONTENT_TYPES: Readonly<Record<(typeof INSPECTOR_FILES)[number], string>> = {
  "index.html": "text/html; charset=utf-8",
  "app.css": "text/css; charset=utf-8",
  "inspector.bundle.js": "text/javascript; charset=utf-8",
};

/** Sent with every answer of the endpoint. */
const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
  "cache-control": "no-store",
};

function isLoopback(address: string): boolean {
  return address === "localhost" || address === "::1" || address.startsWith("127.") || address.startsWith("::ffff:127.");
}

/** The client's IP address, IPv4-mapped IPv6 written as IPv4. */
function remoteAddress(req: HttpRequest): string {
  const a = req.socket.remoteAddress ?? "";
  return a.startsWith("::ffff:") ? a.slice(7) : a;
}

/** Parses `inspectorAllow` once: a predicate over client addresses, or undefined for `off`. */
export function parseInspectorAllow(allow: string): ((address: string) => boolean) | undefined {
  const v = allow.trim();
  if (v === "off") return undefined;
  if (v === "any") return () => true;
  if (v === "loopback" || v === "") return isLoopback;
  const list = new Set(v.split(",").map((s) => s.trim()).filter((s) => s !== ""));
  return (a) => list.has(a) || (list.has("loopback") && isLoopback(a));
}

function refuse(res: HttpResponse, status: number, text: string): void {
  res.writeHead(status, { ...SECURITY_HEADERS, "content-type": "text/plain; charset=utf-8" });
  res.end(`${text}\n`);
}

/** The endpoint for the `endpoints` list of `createMcpServer`. */
export function createInspectorEndpoint(options: InspectorEndpointOptions = {}): HttpEndpoint {
  const allow = options.allow ?? "loopback";
  const allowed = parseInspectorAllow(allow);
  const localhostOnly = isLoopback(options.bindAddress ?? "127.0.0.1");
  const dir = options.dir ?? INSPECTOR_DIST;
  const buildIfMissing = options.buildIfMissing ?? true;
  let building: Promise<void> | undefined;

  async function load(file: (typeof INSPECTOR_FILES)[number]): Promise<Buffer | undefined> {
    try {
      return await readFile(join(dir, file));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
    if (!buildIfMissing) return undefined;
    // A fresh clone that never ran `npm run build`: build once, for every waiting request.
    building ??= import("./build.js").then((b) => b.buildInspector(dir));
    try {
      await building;
    } catch {
      building = undefined;
      return undefined;
    }
    return readFile(join(dir, file));
  }

  async function serve(file: (typeof INSPECTOR_FILES)[number], req: HttpRequest, res: HttpResponse): Promise<void> {
    const body = await load(file);
    if (body === undefined) {
      return refuse(res, 503, `the inspector's assets are not built (${join(dir, file)} is missing): run \`npm run build:inspector\` (or \`npm run build\`)`);
    }
    res.writeHead(200, { ...SECURITY_HEADERS, "content-type": CONTENT_TYPES[file], "content-length": String(body.length) });
    if (req.method === "HEAD") res.end();
    else res.end(body);
  }

  /** Who may have the page (the SDK's host validator loads only with the first inspector request). */
  async function admit(req: HttpRequest, res: HttpResponse): Promise<boolean> {
    const address = remoteAddress(req);
    if (allowed !== undefined && !allowed(address)) {
      refuse(res, 403, `the inspector is not served to ${address} (inspectorAllow is "${allow}")`);
      return false;
    }
    const host = req.headers[":authority"] ?? req.headers.host;
    if (localhostOnly) {
      const { localhostAllowedHostnames, validateHostHeader } = await import("@modelcontextprotocol/server");
      if (!validateHostHeader(typeof host === "string" ? host : undefined, localhostAllowedHostnames()).ok) {
        refuse(res, 403, "the inspector of a loopback server is served under a localhost name only");
        return false;
      }
    }
    const origin = req.headers.origin;
    if (typeof origin === "string" && typeof host === "string" && origin !== `http://${host}` && origin !== `https://${host}`) {
      refuse(res, 403, `the inspector is not served to pages of ${origin}`);
      return false;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      refuse(res, 405, "the inspector's pages answer GET only");
      return false;
    }
    return true;
  }

  async function handle(path: string, req: HttpRequest, res: HttpResponse): Promise<void> {
    if (!(await admit(req, res))) return;
    const name = path === "/inspector" || path === "/inspector/" ? "index.html" : path.slice("/inspector/".length);
    const file = INSPECTOR_FILES.find((f) => f === name);
    if (file === undefined) return refuse(res, 404, `no inspector file ${name}`);
    await serve(file, req, res);
  }

  return (req, res) => {
    // Every plain HTTP request is offered here: one prefix test before anything else.
    if (req.url?.startsWith("/inspector") !== true) return false;
    const path = pathOf(req);
    if (path !== "/inspector" && !path.startsWith("/inspector/")) return false;
    if (allowed === undefined) return false; // off: as if there were no such page
    handle(path, req, res).catch((e: unknown) => {
      if (!res.headersSent) refuse(res, 500, e instanceof Error ? e.message : String(e));
      else res.destroy();
    });
    return true;
  };
}

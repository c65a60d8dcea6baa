/**
 * Loads an optional dependency on first use. better-sqlite3 (a native module) and ioredis are
 * `optionalDependencies`: a program that never opens a SQLite or Redis store never loads them,
 * and an install without them (`npm install --omit=optional`, or a platform where
 * better-sqlite3 cannot be built) fails only when such a store is opened — with a `TypeError`
 * that names the package to install, not a stack trace from inside the module loader.
 *
 * Loading is synchronous (`createRequire`; both packages are CommonJS), so the store factories
 * keep their synchronous signatures and the modules that use them change only their imports.
 *
 * @private Internal code, does not follow semantic versioning.
 */
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

/** What the error message says about a missing package. */
export interface OptionalPackage {
  /** The npm package name. */
  name: string;
  /** The major version to install, as in package.json's `optionalDependencies`. */
  major: number;
  /** Who needs it, for the message: "the SQLite context store (sqlite:…)". */
  neededBy: string;
}

/** `require(pkg.name)`, turning a missing or unloadable package into a `TypeError` naming it. */
export function requireOptional(pkg: OptionalPackage): unknown {
  try {
    return require(pkg.name);
  } catch (e) {
    const missing =
      e instanceof Error &&
      (e as NodeJS.ErrnoException).code === "MODULE_NOT_FOUND" &&
      e.message.startsWith(`Cannot find module '${pkg.name}'`);
    const why = missing
      ? `is not installed: run \`npm install ${pkg.name}@${pkg.major}\``
      : `is installed but could not be loaded (${e instanceof Error ? e.message.split("\n")[0] : String(e)}): reinstall it with \`npm install ${pkg.name}@${pkg.major}\``;
    throw new TypeError(`${pkg.neededBy} needs the optional dependency ${pkg.name}, which ${why}`, { cause: e });
  }
}

/**
 * A stand-in for a class exported by an optional dependency: `new X(…)`, static members and
 * `instanceof` all reach the real class, which is loaded at the first of them.
 */
export function lazyClass<C extends abstract new (...args: never[]) => object>(load: () => C): C {
  let real: C | undefined;
  const get = (): C => (real ??= load());
  // The target only gives the proxy a constructible shape; every trap forwards to the real class
  // (a subclass's `new.target` is kept, so `class X extends Redis` still works).
  const proxy: C = new Proxy(function () {} as unknown as C, {
    construct: (_target, args, newTarget) =>
      Reflect.construct(get() as unknown as new (...a: unknown[]) => object, args, newTarget === proxy ? get() : newTarget),
    get: (_target, key) => Reflect.get(get(), key),
    getPrototypeOf: () => Reflect.getPrototypeOf(get()),
  });
  return proxy;
}

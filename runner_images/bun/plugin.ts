/**
 * Preloaded by kubemill's Bun runner (`bun run --preload=plugin.ts run.ts`, docs/runners.md): in the script,
 * `windmill-client` and `npm:windmill-client@1` mean the file-backed client shared with the Deno runner, and
 * any other `npm:<package>` import means the plain package, which Bun installs on first use.
 *
 * With a lock (`code/script.lock`, lock.ts), the lock is installed once and every package the script imports
 * is resolved in that install, by its absolute path; an import the lock does not contain fails the run with a
 * DependencyError naming it (the runner runs with `--no-install`: nothing is downloaded at run time).
 *
 * Bun's runtime plugins do not call onResolve for bare specifiers (oven-sh/bun#40579), so the plugin rewrites
 * the script's import specifiers as it loads it (onLoad), in place, so line numbers stay the script's.
 */
import { plugin } from "bun";
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { isBuiltin } from "node:module";
import { dirname, resolve } from "node:path";
import process from "node:process";
import { DependencyError, type Installed, installLock, resolveIn, unpinned } from "./lock.ts";

/** The client: copied beside this file in the image, the Deno runner's own in a checkout. */
export const CLIENT_DIR =
  [`${import.meta.dir}/windmill-client`, `${import.meta.dir}/../deno/windmill-client`].find((dir) =>
    existsSync(`${dir}/mod.ts`)
  ) ?? `${import.meta.dir}/windmill-client`;

const CODE_FILE = resolve(process.env.KUBEMILL_CODE_DIR || "/var/run/kubemill/code", "main.ts");
/** Bun loads the script by its real path: in a Debian image /var/run is a symlink to /run. */
const CODE_PATHS = [CODE_FILE, ...(existsSync(CODE_FILE) ? [realpathSync(CODE_FILE)] : [])];
const IMPORT = /(\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|\bimport\s+)(["'])([^"'\n]+)\2/g;
const CLIENT = /^(npm:)?windmill-client(@[^/]*)?$/;

function specifier(name: string): string {
  if (CLIENT.test(name)) return `${CLIENT_DIR}/mod.ts`;
  return name.startsWith("npm:") ? name.slice(4) : name;
}

export function rewriteImports(source: string): string {
  return source.replace(IMPORT, (_all, before, quote, name) => `${before}${quote}${specifier(name)}${quote}`);
}

/** A package import of a locked script, resolved in the lock's install (its version pin dropped: the lock
 * decides); what is not a package (a path, a URL, a built-in module, the client) is left as it is. */
function lockedSpecifier(name: string, installed: Installed, runtime: Set<string>, missing: Set<string>): string {
  const plain = specifier(name);
  if (CLIENT.test(name) || /^[./]/.test(plain) || plain.includes(":") || isBuiltin(plain)) return plain;
  const found = unpinned(plain);
  if (!found) return plain;
  const path = resolveIn(installed, found.bare);
  if (path) return path;
  if (runtime.has(name)) missing.add(found.name); // a type-only import is erased: it needs no package
  return plain;
}

/** The locked script's source with its imports resolved in the lock's install; DependencyError naming the
 * packages it imports that the lock does not contain. */
export function rewriteLocked(source: string, installed: Installed): string {
  const runtime = new Set(new Bun.Transpiler({ loader: "ts" }).scanImports(source).map((i) => i.path));
  const missing = new Set<string>();
  const rewritten = source.replace(IMPORT, (_all, before, quote, name) =>
    `${before}${quote}${lockedSpecifier(name, installed, runtime, missing)}${quote}`
  );
  if (missing.size > 0) {
    const names = [...missing].sort();
    const listed = installed.packages.length ? installed.packages.join(", ") : "no packages";
    throw new DependencyError(
      `main.ts imports ${names.join(", ")}, which the script's lock does not contain (it has ${listed}): ` +
        "add the import and run `kubemill lock` again",
    );
  }
  return rewritten;
}

export const LOCK_FILE = resolve(dirname(CODE_FILE), "script.lock");
let installed: Installed | undefined;

plugin({
  name: "kubemill-windmill-client",
  setup(build) {
    const quote = (path: string) => path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    const exact = new RegExp(`^(${CODE_PATHS.map(quote).join("|")})$`);
    build.onLoad({ filter: exact }, (args) => {
      const source = readFileSync(args.path, "utf-8");
      if (!existsSync(LOCK_FILE)) return { contents: rewriteImports(source), loader: "ts" };
      installed ??= installLock(LOCK_FILE); // a failed install is the run's DependencyError
      return { contents: rewriteLocked(source, installed), loader: "ts" };
    });
  },
});

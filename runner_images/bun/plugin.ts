/**
 * Preloaded by kubemill's Bun runner (`bun run --preload=plugin.ts run.ts`, docs/runners.md): in the script,
 * `windmill-client` and `npm:windmill-client@1` mean the file-backed client shared with the Deno runner, and
 * any other `npm:<package>` import means the plain package, which Bun installs on first use.
 *
 * Bun's runtime plugins do not call onResolve for bare specifiers (oven-sh/bun#40579), so the plugin rewrites
 * the script's import specifiers as it loads it (onLoad), in place, so line numbers stay the script's.
 */
import { plugin } from "bun";
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { resolve } from "node:path";
import process from "node:process";

/** The client: copied beside this file in the image, the Deno runner's own in a checkout. */
export const CLIENT_DIR =
  [`${import.meta.dir}/windmill-client`, `${import.meta.dir}/../deno/windmill-client`].find((dir) =>
    existsSync(`${dir}/mod.ts`)
  ) ?? `${import.meta.dir}/windmill-client`;

const CODE_FILE = resolve(process.env.KUBEMILL_CODE_DIR || "/var/run/kubemill/code", "main.ts");
/** Bun loads the script by its real path: in a Debian image /var/run is a symlink to /run. */
const CODE_PATHS = [CODE_FILE, ...(existsSync(CODE_FILE) ? [realpathSync(CODE_FILE)] : [])];
const IMPORT = /(\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(["'])([^"'\n]+)\2/g;
const CLIENT = /^(npm:)?windmill-client(@[^/]*)?$/;

function specifier(name: string): string {
  if (CLIENT.test(name)) return `${CLIENT_DIR}/mod.ts`;
  return name.startsWith("npm:") ? name.slice(4) : name;
}

export function rewriteImports(source: string): string {
  return source.replace(IMPORT, (_all, before, quote, name) => `${before}${quote}${specifier(name)}${quote}`);
}

plugin({
  name: "kubemill-windmill-client",
  setup(build) {
    const quote = (path: string) => path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    const exact = new RegExp(`^(${CODE_PATHS.map(quote).join("|")})$`);
    build.onLoad({ filter: exact }, (args) => ({
      contents: rewriteImports(readFileSync(args.path, "utf-8")),
      loader: "ts",
    }));
  },
});

/**
 * kubemill's TypeScript runner (Bun): `bun run --preload=plugin.ts run.ts`. The envelope logic is the Deno
 * runner's (windmill-client/runner.ts, shared); plugin.ts maps the script's windmill-client imports.
 */
import process from "node:process";
import { DependencyError, installLock } from "./lock.ts";
import { CLIENT_DIR, LOCK_FILE } from "./plugin.ts";

if (process.env.KUBEMILL_INSTALL_ONLY === "1") {
  // The init container that fills the namespace's shared cache (k8s/jobs.py share_deps_cache): install the
  // lock under KUBEMILL_CACHE_DIR, run nothing of the script.
  try {
    installLock(LOCK_FILE);
    process.exit(0);
  } catch (error) {
    if (!(error instanceof DependencyError)) throw error;
    process.stderr.write(`${error.name}: ${error.message}\n`);
    process.exit(1);
  }
}
const { runMain } = await import(`${CLIENT_DIR}/runner.ts`);
process.exit(await runMain());

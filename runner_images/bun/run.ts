/**
 * kubemill's TypeScript runner (Bun): `bun run --preload=plugin.ts run.ts`. The envelope logic is the Deno
 * runner's (windmill-client/runner.ts, shared); plugin.ts maps the script's windmill-client imports.
 */
import process from "node:process";
import { CLIENT_DIR } from "./plugin.ts";

const { runMain } = await import(`${CLIENT_DIR}/runner.ts`);
process.exit(await runMain());

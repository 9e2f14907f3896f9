/**
 * kubemill's TypeScript runner (Deno). deno.json beside this file maps `npm:windmill-client@1` to
 * ./windmill-client/mod.ts, the file-backed client; ./windmill-client/runner.ts (shared with the Bun runner)
 * calls the script's main and writes the envelope (docs/runners.md).
 */
import process from "node:process";
import { runMain } from "./windmill-client/runner.ts";

process.exit(await runMain());

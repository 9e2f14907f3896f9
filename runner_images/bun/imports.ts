/**
 * `kubemill lock` runs this (`bun imports.ts FILE`) to learn what a Bun script imports at run time: Bun's own
 * transpiler scans the file (type-only imports are left out, as Bun erases them), and Node's and Bun's
 * built-in modules are dropped. Prints a JSON array of the import strings, as written in the script.
 */
import { readFileSync } from "node:fs";
import { isBuiltin } from "node:module";
import process from "node:process";

const file = process.argv[2];
if (!file) throw new Error("usage: bun imports.ts FILE");
const scanned = new Bun.Transpiler({ loader: "ts" }).scanImports(readFileSync(file, "utf-8"));
const paths = [...new Set(scanned.map((i) => i.path))].filter((path) => !isBuiltin(path));
process.stdout.write(JSON.stringify(paths) + "\n");

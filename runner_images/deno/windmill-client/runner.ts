/**
 * The runner half shared by kubemill's TypeScript runners (Deno: ../run.ts, Bun: runner_images/bun/run.ts):
 * imports the script, calls its exported `main` with the run's args in parameter order and writes the result
 * envelope. Contract (paths, envelope, exit codes): docs/runners.md. It lives beside the client because both
 * runtimes ship this directory, and the envelope's state comes from the client.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import process from "node:process";
import { pathToFileURL } from "node:url";
import { format } from "node:util";
import { _envelopeState } from "./mod.ts";
import { storeResult } from "./s3.ts";

const ROOT = "/var/run/kubemill";
const PREFIX = "KUBEMILL_RESULT:";
const SUMMARY_LIMIT = 4096;
const LOG_LIMIT = 1 << 20;
/** Larger envelopes go to workspace storage: the operator keeps results under 1 MiB - 1 KiB. */
const STORE_OVER = LOG_LIMIT - 8192;
const setting = (name: string, fallback: string) => process.env[name] || fallback;

/** Parameter names of a function, from its source: `main(a, b = {...}, c?)` -> [a, b, c]. */
function parameterNames(fn: (...args: never[]) => unknown): string[] {
  const source = fn.toString();
  const open = source.indexOf("(");
  let depth = 0;
  let current = "";
  const parts: string[] = [];
  for (let i = open + 1; i < source.length; i++) {
    const c = source[i];
    if ("([{".includes(c)) depth++;
    if (")]}".includes(c)) {
      if (depth === 0) break;
      depth--;
    }
    if (c === "," && depth === 0) {
      parts.push(current);
      current = "";
    } else current += c;
  }
  parts.push(current);
  return parts.map((p) => p.trim().split(/[=:\s]/)[0].replace(/^\.\.\./, "")).filter((p) => p !== "");
}

type Failure = { name: string; message: string; stack: string | null };
type Fn = (...args: unknown[]) => unknown;

const ENTRYPOINTS = ["main", "preprocessor", "preprocessor-then-main"];

function jsonKind(value: unknown): string {
  if (value === null || value === undefined) return "null";
  if (Array.isArray(value)) return "an array";
  return { boolean: "a boolean", number: "a number", string: "a string" }[typeof value as string] ?? typeof value;
}

function exported(module: Record<string, unknown>, name: string): Fn {
  const fn = module[name];
  if (typeof fn === "function") return fn as Fn;
  const step = process.env.WM_FLOW_STEP_ID;
  const where = step && name === "preprocessor" ? ` (step ${step})` : "";
  const error = new Error(`main.ts exports no ${name} function${where}`);
  error.name = "NameError";
  throw error;
}

/** A function called with the args in parameter order (absent ones undefined, so defaults apply). */
const invoke = async (fn: Fn, args: Record<string, unknown>) =>
  await fn(...parameterNames(fn as (...a: never[]) => unknown).map((name) => args[name] ?? undefined));

/**
 * Call the script's `main`, or (`entrypoint`, which only the operator sets, in the environment) its
 * `preprocessor`, or its `preprocessor` and then `main` on the object it returns (docs/runners.md).
 */
export async function callEntrypoint(
  module: Record<string, unknown>,
  args: Record<string, unknown>,
  entrypoint: string,
): Promise<unknown> {
  if (!ENTRYPOINTS.includes(entrypoint)) {
    throw new Error(`unknown entrypoint ${JSON.stringify(entrypoint)} (expected one of ${ENTRYPOINTS.join(", ")})`);
  }
  if (entrypoint === "main") return await invoke(exported(module, "main"), args);
  const preprocessor = exported(module, "preprocessor");
  const main = entrypoint === "preprocessor" ? null : exported(module, "main");
  const result = await invoke(preprocessor, args);
  if (main === null) return result;
  if (result === null || typeof result !== "object" || Array.isArray(result)) {
    const error = new Error(`the preprocessor must return an object (main's args), not ${jsonKind(result)}`);
    error.name = "TypeError";
    throw error;
  }
  return await invoke(main, result as Record<string, unknown>);
}

function failure(e: unknown): Failure {
  // Bun reports a module that does not parse as a BuildMessage with its position.
  const built = e as { name?: string; message?: string; position?: { line?: number } | null };
  if (built && built.name === "BuildMessage") {
    const line = built.position?.line;
    return { name: "SyntaxError", message: line ? `${built.message} (line ${line})` : `${built.message}`, stack: String(e) };
  }
  if (e instanceof Error) {
    // Deno reports a module that does not parse as a TypeError whose message starts "SyntaxError: ".
    const syntax = e.name === "SyntaxError" || e.message.startsWith("SyntaxError: ");
    const at = /main\.ts:(\d+):(\d+)/.exec(`${e.message}\n${e.stack ?? ""}`);
    if (syntax) {
      const first = e.message.replace(/^SyntaxError: /, "").split("\n")[0];
      return { name: "SyntaxError", message: at ? `${first} (line ${at[1]})` : first, stack: e.message };
    }
    return { name: e.name, message: e.message, stack: e.stack ?? null };
  }
  return { name: "Error", message: String(e), stack: null };
}

function write(path: string, text: string): void {
  try {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
  } catch {
    // not writable (e.g. no termination log outside Kubernetes): the other outputs still carry the envelope
  }
}

/** The forms of the run's secret values (the operator lists them, longest first), or [] without any. */
function maskForms(): string[] {
  const path = process.env.KUBEMILL_MASKS_FILE;
  if (!path) return [];
  try {
    const forms = JSON.parse(readFileSync(path, "utf-8"));
    return Array.isArray(forms) ? forms.filter((f) => typeof f === "string" && f.length > 0) : [];
  } catch {
    return [];
  }
}

/** A plain JSON value with every form replaced by `***`, in keys too. */
function mask(value: unknown, forms: string[]): unknown {
  if (typeof value === "string") return forms.reduce((text, form) => text.split(form).join("***"), value);
  if (Array.isArray(value)) return value.map((v) => mask(v, forms));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [mask(k, forms), mask(v, forms)]));
  }
  return value;
}

/**
 * What the script prints through `console` and `process.stdout`/`stderr` reaches the container log masked.
 * (A subprocess it spawns with inherited stdio writes straight to the log: docs/security.md.)
 */
function maskOutput(forms: string[]): void {
  const hide = (text: string) => forms.reduce((t, form) => t.split(form).join("***"), text);
  for (const stream of [process.stdout, process.stderr]) {
    const write = stream.write.bind(stream) as (chunk: unknown, ...rest: unknown[]) => boolean;
    stream.write = ((chunk: unknown, ...rest: unknown[]) =>
      write(typeof chunk === "string" ? hide(chunk) : chunk instanceof Uint8Array
        ? hide(new TextDecoder().decode(chunk)) : chunk, ...rest)) as typeof stream.write;
  }
  const out = (text: string) => process.stdout.write(text + "\n");
  const err = (text: string) => process.stderr.write(text + "\n");
  for (const [name, sink] of [["log", out], ["info", out], ["debug", out], ["warn", err], ["error", err]] as const) {
    (console as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => sink(format(...args));
  }
}

/** Run the script's main and write the envelope; the exit code to end with (0 result, 1 error). */
export async function runMain(): Promise<number> {
  const codeFile = `${setting("KUBEMILL_CODE_DIR", `${ROOT}/code`)}/main.ts`;
  const stateFile = setting("KUBEMILL_STATE_FILE", `${ROOT}/state/state.json`);
  const forms = maskForms();
  if (forms.length > 0) maskOutput(forms);
  let envelope: { result: unknown; error: Failure | null; state: unknown };
  try {
    const args = JSON.parse(readFileSync(setting("KUBEMILL_ARGS_FILE", `${ROOT}/args.json`), "utf-8")) ?? {};
    const module = await import(pathToFileURL(codeFile).href);
    const result = await callEntrypoint(module, args, process.env.KUBEMILL_ENTRYPOINT || "main");
    envelope = { result: result === undefined ? null : result, error: null, state: _envelopeState().state };
  } catch (e) {
    envelope = { result: null, error: failure(e), state: _envelopeState().state };
  }
  let text: string;
  try {
    text = JSON.stringify(envelope);
  } catch (e) {
    const message = `main returned a value that is not JSON-serialisable: ${e instanceof Error ? e.message : e}`;
    envelope = { result: null, error: { name: "ResultNotSerializable", message, stack: null }, state: null };
    text = JSON.stringify(envelope);
  }
  if (forms.length > 0) {
    // what viewers can read (termination message, log line) never holds a secret
    envelope = mask(JSON.parse(text), forms) as typeof envelope;
    text = JSON.stringify(envelope);
  }
  if (!envelope.error && new TextEncoder().encode(text).length > STORE_OVER) {
    // over 1 MiB: into the workspace storage when the namespace has one (the result is masked already)
    try {
      const ref = await storeResult(JSON.stringify(envelope.result), setting("KUBEMILL_RUN_NAME", "run"));
      if (ref) {
        envelope = { ...envelope, result: null, result_ref: ref } as typeof envelope;
        text = JSON.stringify(envelope);
      }
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      envelope = { ...envelope, result: null, error: { name: "ResultStoreFailed", message, stack: null } };
      text = JSON.stringify(envelope);
    }
  }
  const { changed } = _envelopeState();
  if (changed && envelope.state !== null) write(stateFile, JSON.stringify(envelope.state));
  write(setting("KUBEMILL_RESULT_FILE", `${ROOT}/out/result.json`), text);
  const size = new TextEncoder().encode(text).length;
  let summary = text;
  if (size > SUMMARY_LIMIT) {
    const e = envelope.error;
    const error = e && { name: e.name.slice(0, 200), message: e.message.slice(0, 1500), stack: (e.stack ?? "").slice(-1500) };
    summary = JSON.stringify({ result: null, error, state: null, truncated: true, bytes: size });
  }
  write(setting("KUBEMILL_TERMINATION_LOG", "/dev/termination-log"), summary);
  if (setting("KUBEMILL_LOG_RESULT", "1") !== "0" && size <= LOG_LIMIT) {
    await new Promise<void>((done) => process.stdout.write(`\n${PREFIX}${text}\n`, () => done()));
  }
  return envelope.error ? 1 : 0;
}


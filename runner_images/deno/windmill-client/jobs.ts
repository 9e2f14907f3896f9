/**
 * Scripts that start runs, in TypeScript (Deno and Bun): `runScript`, `runScriptAsync`, `runFlow`,
 * `runFlowAsync`, `waitJob`, `getResult`, `getJobStatus` and `cancelRunning`, as the Python client's
 * wmill/jobs.py does them: ScriptRuns and FlowRuns created through the Kubernetes API under the Script's
 * opt-in identity (`spec.runner.serviceAccountName`; RBAC decides), each child owned by this run and labelled
 * `kubemill.dev/parent-run-uid` (deleting or cancelling the parent deletes or cancels it). A job id is the
 * child's name. The API is reached with node:https and the in-cluster token and CA, read on each request.
 *
 * Transient failures are retried as in wmill/kube_api.py (docs/runners.md, "Retries"): a connection refused,
 * reset or timed out, HTTP 502/503/504, the API server's 500 for an admission webhook it could not call;
 * exponential backoff with jitter until $KUBEMILL_API_RETRY_SECONDS (60 s) have passed; nothing else. A child's
 * name is chosen before the first attempt, so a create whose answer was lost is found by its 409 and adopted
 * when it is this run's and holds what was sent: one call, one run.
 */
import { Buffer } from "node:buffer";
import { existsSync, readFileSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import process from "node:process";
import { getObject, workspaceStorage } from "./s3.ts";

const GROUP_VERSION = "kubemill.dev/v1alpha1";
const SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";
const TERMINAL = ["Succeeded", "Failed", "Cancelled"];
const RETRY_ENV = "KUBEMILL_API_RETRY_SECONDS";
const RETRY_STATUSES = [502, 503, 504];
const TRANSIENT_CODES = ["ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "EPIPE", "ETIMEDOUT", "ConnectionRefused"];
const ATTEMPT_TIMEOUT_MS = 30000;
const SUFFIX = "bcdfghjklmnpqrstvwxz2456789"; // the API server's generateName alphabet
const kinds = new Map<string, "scriptrun" | "flowrun">();

export class PermissionDenied extends Error {
  override name = "PermissionDenied";
}
export class JobFailed extends Error {
  override name = "JobFailed";
}

/** An answer of the API server other than success; `retried`: it came to a repeated attempt. */
export class ApiError extends Error {
  override name = "ApiError";
  constructor(message: string, readonly status: number, readonly retried = false) {
    super(message);
  }
}
/** No answer, or only transient failures, until the retry deadline. */
export class Unavailable extends ApiError {
  override name = "Unavailable";
}

type Run = { metadata: Record<string, any>; spec?: Record<string, any>; status?: Record<string, any> };

export function retrySeconds(): number {
  const text = (process.env[RETRY_ENV] ?? "").trim();
  if (!text) return 60;
  const value = Number(text);
  if (!(value >= 0 && value <= 3600)) {
    throw new Error(`${RETRY_ENV}=${JSON.stringify(text)}: give a number of seconds between 0 and 3600`);
  }
  return value;
}

export function transientAnswer(status: number, text: string): boolean {
  return RETRY_STATUSES.includes(status) || (status === 500 && text.includes("failed calling webhook"));
}

export function transientError(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return typeof code === "string" && TRANSIENT_CODES.includes(code);
}

/** The pause in ms after failed attempt `attempt` (1, 2, ...): doubling from 200 ms up to 5 s, drawn in its
 * upper half (jitter). */
export function backoff(attempt: number, rand: () => number = Math.random): number {
  const ceiling = Math.min(5000, 200 * 2 ** (attempt - 1));
  return ceiling * (0.5 + rand() / 2);
}

type Answer = { status: number; text: string };

function sendOnce(method: string, path: string, data: string | undefined, contentType: string, timeout: number): Promise<Answer> {
  const token = readFileSync(`${saDir()}/token`, "utf-8").trim(); // projected tokens rotate: read each time
  const headers: Record<string, string> = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  if (data !== undefined) {
    headers["Content-Type"] = contentType;
    headers["Content-Length"] = String(Buffer.byteLength(data));
  }
  return new Promise<Answer>((resolve, reject) => {
    const req = httpsRequest(
      {
        hostname: process.env.KUBERNETES_SERVICE_HOST,
        port: Number(process.env.KUBERNETES_SERVICE_PORT || 443),
        path,
        method,
        headers,
        ca: readFileSync(`${saDir()}/ca.crt`),
        timeout,
      },
      (res) => {
        const chunks: Uint8Array[] = [];
        res.on("data", (c: Uint8Array) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
      },
    );
    req.on("timeout", () => req.destroy(Object.assign(new Error(`no answer within ${timeout} ms`), { code: "ETIMEDOUT" })));
    req.on("error", reject);
    if (data !== undefined) req.write(data);
    req.end();
  });
}

/** The first final answer to the request, retrying transient failures until the deadline. */
async function send(method: string, path: string, what: string, data: string | undefined, contentType: string) {
  const retryFor = retrySeconds() * 1000;
  const start = Date.now();
  for (let attempt = 1; ; attempt++) {
    let reason: string;
    try {
      const timeout = Math.max(1000, Math.min(ATTEMPT_TIMEOUT_MS, start + retryFor - Date.now()));
      const answer = await sendOnce(method, path, data, contentType, timeout);
      if (!transientAnswer(answer.status, answer.text)) return { ...answer, retried: attempt > 1 };
      reason = `HTTP ${answer.status}: ${message(answer.text)}`;
    } catch (err) {
      if (!transientError(err)) throw err;
      reason = `${(err as { code?: string }).code}: ${(err as Error).message}`;
    }
    const pause = backoff(attempt);
    if (Date.now() + pause > start + retryFor) {
      throw new Unavailable(
        `${what}: ${method} ${path} got no answer but transient failures for ${Math.round((Date.now() - start) / 1000)}s ` +
          `(${attempt} attempts; ${RETRY_ENV}=${retryFor / 1000}); the last: ${reason}`,
        503,
      );
    }
    await new Promise((r) => setTimeout(r, pause));
  }
}

function message(text: string): string {
  try {
    return JSON.parse(text).message ?? text;
  } catch {
    return text; // not JSON
  }
}

function saDir(): string {
  return process.env.KUBEMILL_SERVICEACCOUNT_DIR || SA_DIR;
}

function namespace(): string {
  return process.env.WM_WORKSPACE ?? "";
}

function identity(): string {
  const name = process.env.KUBEMILL_SERVICE_ACCOUNT;
  return name ? `system:serviceaccount:${namespace()}:${name}` : "this run's ServiceAccount";
}

function noIdentity(call: string): Error {
  if (!("KUBEMILL_SERVICE_ACCOUNT" in process.env)) {
    return new Error(
      `${call} starts runs on the cluster, which \`kubemill run\` does not do: run this script as a ScriptRun ` +
        "whose Script sets spec.runner.serviceAccountName (docs/resources.md, 'Scripts that start runs')",
    );
  }
  return new PermissionDenied(
    `${call} needs a Kubernetes identity and this run has none: set spec.runner.serviceAccountName on the ` +
      `Script to a ServiceAccount of namespace '${namespace()}' that a Role allows to create and get ` +
      "scriptruns.kubemill.dev and flowruns.kubemill.dev",
  );
}

async function api(
  call: string,
  method: string,
  path: string,
  verb: string,
  what: string,
  body?: unknown,
  contentType = "application/json",
): Promise<any> {
  if (!process.env.KUBERNETES_SERVICE_HOST || !existsSync(`${saDir()}/token`)) throw noIdentity(call);
  const data = body === undefined ? undefined : JSON.stringify(body);
  const { status, text, retried } = await send(method, path, `${call}: ${verb} ${what}`, data, contentType);
  if (status === 404 && method === "GET") return undefined;
  if (status >= 300) {
    if (status === 403) {
      throw new PermissionDenied(
        `${identity()} may not ${verb} ${path.split("/").slice(-2, -1)[0]} (${what}) in namespace ` +
          `'${namespace()}': grant it with a Role and RoleBinding. The API server said: ${message(text)}`,
      );
    }
    throw new ApiError(`${verb} ${what} failed with HTTP ${status}: ${message(text)}`, status, retried);
  }
  return text ? JSON.parse(text) : {};
}

const runsPath = (plural: string, name = "") =>
  `/apis/${GROUP_VERSION}/namespaces/${encodeURIComponent(namespace())}/${plural}` +
  (name ? `/${encodeURIComponent(name)}` : "");

async function start(call: string, kind: "scriptrun" | "flowrun", path: string, args?: Record<string, unknown>) {
  const parentName = process.env.KUBEMILL_RUN_NAME ?? "";
  const parentUid = process.env.WM_JOB_ID ?? "";
  const base = path.split("/").pop()!.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "")
    .slice(0, 40) || "run";
  const metadata: Record<string, unknown> = { labels: { "kubemill.dev/parent-run-uid": parentUid } };
  if (parentName && parentUid) {
    metadata.annotations = { "kubemill.dev/parent-run": parentName };
    metadata.ownerReferences = [{ apiVersion: GROUP_VERSION, kind: "ScriptRun", name: parentName, uid: parentUid }];
  }
  const body = {
    apiVersion: GROUP_VERSION,
    kind: kind === "scriptrun" ? "ScriptRun" : "FlowRun",
    metadata,
    spec: { [kind === "scriptrun" ? "scriptPath" : "flowPath"]: path, args: args ?? {} },
  };
  for (let draw = 0; draw < 5; draw++) {
    metadata.name = `${base}-${Array.from({ length: 5 }, () => SUFFIX[Math.floor(Math.random() * SUFFIX.length)]).join("")}`;
    try {
      await api(call, "POST", runsPath(`${kind}s`), "create", path, body);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 409) throw err;
      // A 409 to a repeated attempt may be the first attempt's run (its answer lost); else the name is taken.
      if (!(err.retried && await isOurs(call, kind, body))) continue;
    }
    kinds.set(String(metadata.name), kind);
    return String(metadata.name);
  }
  throw new ApiError(`${call}: create ${kind}s (${path}): five names in a row were taken`, 409);
}

/** Whether the run named as `body` is the one `body` asked for, made by this run. */
async function isOurs(call: string, kind: string, body: { metadata: Record<string, any>; spec: Record<string, unknown> }) {
  const found: Run | undefined = await api(call, "GET", runsPath(`${kind}s`, body.metadata.name), "get", body.metadata.name);
  if (!found) return false;
  const parent = "kubemill.dev/parent-run-uid";
  return found.metadata.labels?.[parent] === body.metadata.labels[parent] &&
    Object.entries(body.spec).every(([k, v]) => sameJson(found.spec?.[k], v));
}

/** JSON values equal whatever the order of their keys (the API server sorts them). */
function sameJson(a: unknown, b: unknown): boolean {
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => sameJson(x, b[i]));
  }
  if (a && b && typeof a === "object" && typeof b === "object") {
    const ka = Object.keys(a), kb = Object.keys(b);
    return ka.length === kb.length && ka.every((k) => sameJson((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
  }
  return a === b;
}

async function getRun(call: string, jobId: string): Promise<[string, Run]> {
  const known = kinds.get(jobId);
  for (const kind of known ? [known] : (["scriptrun", "flowrun"] as const)) {
    const found = await api(call, "GET", runsPath(`${kind}s`, jobId), "get", jobId);
    if (found) {
      kinds.set(jobId, kind);
      return [kind, found];
    }
  }
  throw new Error(`no ScriptRun or FlowRun named '${jobId}' in namespace '${namespace()}'`);
}

async function resultOf(call: string, run: Run): Promise<unknown> {
  const status = run.status ?? {};
  const ref = status.resultRef;
  if (!ref) return status.result ?? null;
  if (ref.s3) {
    const storage = workspaceStorage();
    if (!storage) throw new Error(`the result of ${run.metadata.name} is in workspace storage, not given`);
    return JSON.parse(new TextDecoder().decode(await getObject(storage, ref.s3)));
  }
  const path = `/api/v1/namespaces/${encodeURIComponent(namespace())}/configmaps/${encodeURIComponent(ref.name)}`;
  const cm = await api(call, "GET", path, "get", ref.name);
  if (!cm) throw new Error(`the result of ${run.metadata.name} (ConfigMap ${ref.name}) is gone`);
  return JSON.parse(cm.data?.[ref.key ?? "result.json"] ?? "null");
}

export function runScriptAsync(path: string, args?: Record<string, unknown>): Promise<string> {
  return start("runScriptAsync", "scriptrun", path, args);
}

export function runFlowAsync(path: string, args?: Record<string, unknown>): Promise<string> {
  return start("runFlowAsync", "flowrun", path, args);
}

export async function getJobStatus(jobId: string): Promise<"WAITING" | "RUNNING" | "COMPLETED"> {
  const [, run] = await getRun("getJobStatus", jobId);
  const phase = run.status?.phase ?? "Pending";
  return TERMINAL.includes(phase) ? "COMPLETED" : phase === "Pending" ? "WAITING" : "RUNNING";
}

export async function getResult(jobId: string): Promise<unknown> {
  const [, run] = await getRun("getResult", jobId);
  return await resultOf("getResult", run);
}

/** The run's result once it ends; JobFailed if it did not succeed; an Error after `timeoutSeconds`. */
export async function waitJob(jobId: string, timeoutSeconds?: number): Promise<unknown> {
  const deadline = timeoutSeconds === undefined ? undefined : Date.now() + timeoutSeconds * 1000;
  let delay = 500;
  while (true) {
    const [kind, run] = await getRun("waitJob", jobId);
    const status = run.status ?? {};
    if (status.phase === "Succeeded") return await resultOf("waitJob", run);
    if (TERMINAL.includes(status.phase)) {
      const error = status.error ?? {};
      const step = error.step ? ` at step ${error.step}` : "";
      throw new JobFailed(
        `${kind} ${jobId} ${String(status.phase).toLowerCase()}${step}: ${error.name ?? status.phase}: ${error.message ?? ""}`,
      );
    }
    if (deadline !== undefined && Date.now() > deadline) {
      throw new Error(`${kind} ${jobId} did not finish within ${timeoutSeconds}s (it is ${status.phase ?? "Pending"})`);
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 1.5, 3000);
  }
}

export async function runScript(path: string, args?: Record<string, unknown>, timeoutSeconds?: number): Promise<unknown> {
  return await waitJob(await runScriptAsync(path, args), timeoutSeconds);
}

export async function runFlow(path: string, args?: Record<string, unknown>, timeoutSeconds?: number): Promise<unknown> {
  return await waitJob(await runFlowAsync(path, args), timeoutSeconds);
}

/** Windmill's cancelRunning: cancel the other unfinished runs of this script (needs list and patch). */
export async function cancelRunning(): Promise<{ canceled: string[] }> {
  const path = process.env.WM_JOB_PATH ?? "";
  const me = process.env.KUBEMILL_RUN_NAME ?? "";
  if (!path) throw new Error("cancelRunning: this run has no script path (WM_JOB_PATH)");
  const found = await api("cancelRunning", "GET", runsPath("scriptruns"), "list", path);
  const canceled: string[] = [];
  for (const run of (found?.items ?? []) as Run[]) {
    const name = run.metadata.name;
    if (name === me || run.spec?.scriptPath !== path || TERMINAL.includes(run.status?.phase)) continue;
    const patch = { metadata: { annotations: { "kubemill.dev/cancel": "true" } } };
    await api("cancelRunning", "PATCH", runsPath("scriptruns", name), "patch", path, patch, "application/merge-patch+json");
    canceled.push(name);
  }
  return { canceled };
}

/**
 * Scripts that start runs, in TypeScript (Deno and Bun): `runScript`, `runScriptAsync`, `runFlow`,
 * `runFlowAsync`, `waitJob`, `getResult`, `getJobStatus` and `cancelRunning`, as the Python client's
 * wmill/jobs.py does them: ScriptRuns and FlowRuns created through the Kubernetes API under the Script's
 * opt-in identity (`spec.runner.serviceAccountName`; RBAC decides), each child owned by this run and labelled
 * `kubemill.dev/parent-run-uid` (deleting or cancelling the parent deletes or cancels it). A job id is the
 * child's name. The API is reached with node:https and the in-cluster token and CA, read on each request.
 */
import { Buffer } from "node:buffer";
import { existsSync, readFileSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import process from "node:process";
import { getObject, workspaceStorage } from "./s3.ts";

const GROUP_VERSION = "kubemill.dev/v1alpha1";
const SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";
const TERMINAL = ["Succeeded", "Failed", "Cancelled"];
const kinds = new Map<string, "scriptrun" | "flowrun">();

export class PermissionDenied extends Error {
  override name = "PermissionDenied";
}
export class JobFailed extends Error {
  override name = "JobFailed";
}

type Run = { metadata: Record<string, any>; spec?: Record<string, any>; status?: Record<string, any> };

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
  const host = process.env.KUBERNETES_SERVICE_HOST;
  const tokenFile = `${saDir()}/token`;
  if (!host || !existsSync(tokenFile)) throw noIdentity(call);
  const token = readFileSync(tokenFile, "utf-8").trim();
  const data = body === undefined ? undefined : JSON.stringify(body);
  const headers: Record<string, string> = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  if (data !== undefined) headers["Content-Type"] = contentType;
  const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = httpsRequest(
      {
        hostname: host,
        port: Number(process.env.KUBERNETES_SERVICE_PORT || 443),
        path,
        method,
        headers,
        ca: readFileSync(`${saDir()}/ca.crt`),
        timeout: 30000,
      },
      (res) => {
        const chunks: Uint8Array[] = [];
        res.on("data", (c: Uint8Array) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
      },
    );
    req.on("error", reject);
    if (data !== undefined) req.write(data);
    req.end();
  });
  if (status === 404 && method === "GET") return undefined;
  if (status >= 300) {
    let message = text;
    try {
      message = JSON.parse(text).message ?? text;
    } catch { /* not JSON */ }
    if (status === 403) {
      throw new PermissionDenied(
        `${identity()} may not ${verb} ${path.split("/").slice(-2, -1)[0]} (${what}) in namespace ` +
          `'${namespace()}': grant it with a Role and RoleBinding. The API server said: ${message}`,
      );
    }
    throw new Error(`${verb} ${what} failed with HTTP ${status}: ${message}`);
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
  const metadata: Record<string, unknown> = {
    generateName: `${base}-`,
    labels: { "kubemill.dev/parent-run-uid": parentUid },
  };
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
  const created = await api(call, "POST", runsPath(`${kind}s`), "create", path, body);
  kinds.set(created.metadata.name, kind);
  return String(created.metadata.name);
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

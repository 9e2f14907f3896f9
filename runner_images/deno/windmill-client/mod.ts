/**
 * A Windmill-compatible `windmill-client` backed by files, so Windmill TypeScript scripts run unchanged under
 * kubemill (Deno maps `npm:windmill-client@1` here with deno.json; Bun with a plugin). It reads the files the
 * runner contract defines (docs/runners.md): `resource.<path>` / `variable.<path>` under
 * $KUBEMILL_RESOURCES_DIR, with `/` in the path written as `.`; state travels in the result envelope.
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import { getObject, newUploadKey, putObject, type S3Object, workspaceStorage, endpointUrl } from "./s3.ts";

export type { S3Object };

const ROOT = "/var/run/kubemill";
const env = (name: string): string | undefined => process.env[name] || undefined;
const MISSING = Symbol("missing");
const state: { value: unknown; original: unknown; loaded: boolean } = {
  value: MISSING,
  original: null,
  loaded: false,
};

export class ResourceNotFound extends Error {
  override name = "ResourceNotFound";
}
export class NotSupported extends Error {
  override name = "NotSupported";
}

function read(kind: "resource" | "variable", path: string): string | undefined {
  const dir = env("KUBEMILL_RESOURCES_DIR") ?? `${ROOT}/resources`;
  const name = `${kind}.${path.replace(/^\/+|\/+$/g, "").replaceAll("/", ".")}`;
  try {
    return readFileSync(`${dir}/${name}`, "utf-8");
  } catch {
    return undefined;
  }
}

function notFound(kind: string, path: string): ResourceNotFound {
  return new ResourceNotFound(
    `${kind} '${path}' is not available to this run: list it in the Script's spec.resources and create a ` +
      `${kind[0].toUpperCase()}${kind.slice(1)} with spec.path '${path}' in the namespace (for \`kubemill run\`, ` +
      `a ${path}.${kind}.yaml file in the workspace)`,
  );
}

function interpolate(value: unknown): unknown {
  if (typeof value === "string") {
    if (value.startsWith("$var:")) return getVariableSync(value.slice(5));
    if (value.startsWith("$res:")) return getResourceSync(value.slice(5));
    return value;
  }
  if (Array.isArray(value)) return value.map(interpolate);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v)]));
  }
  return value;
}

function getResourceSync(path: string, undefinedIfEmpty = false): any {
  const text = read("resource", path);
  if (text === undefined) {
    if (undefinedIfEmpty) return undefined;
    throw notFound("resource", path);
  }
  return interpolate(JSON.parse(text));
}

function getVariableSync(path: string): string {
  const text = read("variable", path);
  if (text === undefined) throw notFound("variable", path);
  return text;
}

// deno-lint-ignore no-explicit-any
export async function getResource(path: string, undefinedIfEmpty = false): Promise<any> {
  return getResourceSync(path, undefinedIfEmpty);
}

export async function getVariable(path: string): Promise<string> {
  return getVariableSync(path);
}

function loadState(): void {
  if (state.loaded) return;
  state.loaded = true;
  try {
    state.original = JSON.parse(readFileSync(env("KUBEMILL_STATE_FILE") ?? `${ROOT}/state/state.json`, "utf-8"));
  } catch {
    state.original = null;
  }
}

// deno-lint-ignore no-explicit-any
export async function getState(): Promise<any> {
  loadState();
  return state.value === MISSING ? state.original : state.value;
}

export async function setState(value: unknown): Promise<void> {
  loadState();
  state.value = value;
}

export const getFlowUserState = getState;

export function getStatePath(): string {
  return env("WM_STATE_PATH") ?? "";
}

export function getWorkspace(): string {
  return env("WM_WORKSPACE") ?? "";
}

export async function getResumeUrls(approver?: string): Promise<{ approvalPage: string; resume: string; cancel: string }> {
  let text: string;
  try {
    text = readFileSync(env("KUBEMILL_RESUME_URLS_FILE") ?? `${ROOT}/resume-urls.json`, "utf-8");
  } catch {
    throw new NotSupported("resume URLs exist only for a flow step followed by an approval step; this run has none");
  }
  const doc = JSON.parse(text);
  const byApprover = doc.approvers ?? {};
  if (approver) {
    if (!(approver in byApprover)) {
      const listed = Object.keys(byApprover).join(", ") || "none by name";
      throw new NotSupported(`no resume URLs for approver '${approver}': the step's approvers are ${listed}`);
    }
    return byApprover[approver];
  }
  return { approvalPage: doc.approvalPage, resume: doc.resume, cancel: doc.cancel };
}

let progress = 0;
export async function setProgress(value: number): Promise<void> {
  progress = Math.trunc(value);
  console.error(`KUBEMILL_PROGRESS: ${progress}`);
}
export async function getProgress(): Promise<number> {
  return progress;
}

export async function whoami(): Promise<Record<string, unknown>> {
  return { email: env("WM_EMAIL") ?? "", username: env("WM_USERNAME") ?? "", workspace_id: getWorkspace() };
}

// --- object storage (s3.ts): Windmill's S3 helpers --------------------------------------------------------

// deno-lint-ignore no-explicit-any
function s3Settings(s3ResourcePath?: string): any {
  if (s3ResourcePath) return getResourceSync(s3ResourcePath);
  const storage = workspaceStorage();
  if (!storage) {
    throw new ResourceNotFound(
      "this namespace has no workspace storage: label a Resource of type s3 kubemill.dev/workspace-storage=true, " +
        "or pass s3ResourcePath (a resource the Script declares)",
    );
  }
  return storage;
}

function s3Key(s3object: S3Object | string): string {
  const key = typeof s3object === "string" ? s3object : s3object?.s3;
  if (typeof key !== "string" || !key) throw new Error('an S3Object is { s3: "<key>" } with a non-empty key');
  return key;
}

/** The content of the object `s3object` names, from the workspace storage or `s3ResourcePath`. */
export async function loadS3File(s3object: S3Object | string, s3ResourcePath?: string): Promise<Uint8Array> {
  return await getObject(s3Settings(s3ResourcePath), s3Key(s3object));
}

export async function loadS3FileStream(s3object: S3Object | string, s3ResourcePath?: string): Promise<Blob> {
  return new Blob([(await loadS3File(s3object, s3ResourcePath)) as BlobPart]);
}

/** Write `fileContent` to the object `s3object` names (a new key under windmill_uploads/ when undefined). */
export async function writeS3File(
  s3object: S3Object | string | undefined,
  fileContent: string | Blob | Uint8Array,
  s3ResourcePath?: string,
  contentType?: string,
  _contentDisposition?: string,
): Promise<S3Object> {
  const key = s3object ? s3Key(s3object) : newUploadKey();
  const body = typeof fileContent === "string"
    ? new TextEncoder().encode(fileContent)
    : fileContent instanceof Blob
    ? new Uint8Array(await fileContent.arrayBuffer())
    : fileContent;
  await putObject(s3Settings(s3ResourcePath), key, body, contentType);
  return { s3: key };
}

/** Settings for an S3 client (Windmill's `denoS3LightClientSettings`: endPoint, region, bucket, keys...). */
export async function denoS3LightClientSettings(s3ResourcePath?: string): Promise<Record<string, unknown>> {
  const s = s3Settings(s3ResourcePath);
  const url = new URL(endpointUrl(s));
  return {
    endPoint: url.hostname,
    port: url.port ? Number(url.port) : undefined,
    useSSL: url.protocol === "https:",
    region: s.region || "us-east-1",
    bucket: s.bucket,
    accessKey: s.accessKeyId,
    secretKey: s.secretKey,
    pathStyle: s.pathStyle ?? true,
  };
}

function unsupported(name: string) {
  return async (..._args: unknown[]): Promise<never> => {
    throw new NotSupported(
      `${name} is not available under kubemill: resources, variables and schedules are declared as manifests ` +
        "in git (Resource, Variable, Schedule); change them there",
    );
  };
}
export const setResource = unsupported("setResource");
export const setVariable = unsupported("setVariable");
export {
  cancelRunning,
  getJobStatus,
  getResult,
  JobFailed,
  PermissionDenied,
  runFlow,
  runFlowAsync,
  runScript,
  runScriptAsync,
  waitJob,
} from "./jobs.ts";

/** For the runner: the state to put in the envelope, and whether the script changed it. */
export function _envelopeState(): { state: unknown; changed: boolean } {
  loadState();
  return state.value === MISSING ? { state: state.original, changed: false } : { state: state.value, changed: true };
}

/**
 * Windmill's S3 helpers for the TypeScript client (Deno and Bun), over a small S3 client (AWS Signature
 * Version 4 with node:crypto, fetch). As in Python (runner_images/python3/wmill/s3.py): the namespace's
 * workspace storage is the file $KUBEMILL_WORKSPACE_STORAGE_FILE (a resource of type s3 the operator hands
 * every run); `s3ResourcePath` names a resource of type s3 the Script declares instead. Objects are named by
 * an S3Object `{ s3: "<key>" }`.
 */
import { createHash, createHmac, randomUUID } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import process from "node:process";

export type S3Object = { s3: string; storage?: string };
type Settings = Record<string, unknown>;

export class S3Error extends Error {
  override name = "S3Error";
}

export function workspaceStorage(): Settings | undefined {
  const path = process.env.KUBEMILL_WORKSPACE_STORAGE_FILE;
  if (!path || !existsSync(path)) return undefined;
  return JSON.parse(readFileSync(path, "utf-8"));
}

export function endpointUrl(s: Settings): string {
  const host = String(s.endPoint || `s3.${s.region || "us-east-1"}.amazonaws.com`);
  if (host.includes("://")) return host.replace(/\/+$/, "");
  const scheme = s.useSSL === false ? "http" : "https";
  return `${scheme}://${host}${s.port ? `:${s.port}` : ""}`;
}

const sha256 = (data: string | Uint8Array) => createHash("sha256").update(data).digest("hex");
const hmac = (key: string | Uint8Array, text: string) => createHmac("sha256", key).update(text).digest();

async function request(s: Settings, method: "GET" | "PUT", key: string, body?: Uint8Array, contentType?: string) {
  for (const field of ["bucket", "accessKeyId", "secretKey"]) {
    if (!s[field]) throw new S3Error(`the s3 resource lacks ${field}`);
  }
  const base = new URL(endpointUrl(s));
  const region = String(s.region || "us-east-1");
  const path = `/${encodeURIComponent(String(s.bucket))}/${key.split("/").map(encodeURIComponent).join("/")}`;
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
  const day = stamp.slice(0, 8);
  const digest = sha256(body ?? new Uint8Array());
  const headers: Record<string, string> = { host: base.host, "x-amz-content-sha256": digest, "x-amz-date": stamp };
  if (contentType) headers["content-type"] = contentType;
  const names = Object.keys(headers).sort();
  const canonical = [method, path, "", ...names.map((n) => `${n}:${headers[n]}`), "", names.join(";"), digest].join("\n");
  const scope = `${day}/${region}/s3/aws4_request`;
  const signing = hmac(hmac(hmac(hmac(`AWS4${s.secretKey}`, day), region), "s3"), "aws4_request");
  const signature = createHmac("sha256", signing).update(`AWS4-HMAC-SHA256\n${stamp}\n${scope}\n${sha256(canonical)}`)
    .digest("hex");
  headers.authorization =
    `AWS4-HMAC-SHA256 Credential=${s.accessKeyId}/${scope}, SignedHeaders=${names.join(";")}, Signature=${signature}`;
  delete headers.host;
  let response: Response;
  try {
    response = await fetch(`${base.protocol}//${base.host}${path}`, { method, headers, body: body as BodyInit | undefined });
  } catch (e) {
    throw new S3Error(`S3 ${method} of '${key}' in bucket '${s.bucket}' failed: ${e instanceof Error ? e.message : e}`);
  }
  if (!response.ok) {
    await response.body?.cancel();
    throw new S3Error(`S3 ${method} of '${key}' in bucket '${s.bucket}' failed: HTTP ${response.status}`);
  }
  return new Uint8Array(await response.arrayBuffer());
}

export const getObject = (s: Settings, key: string) => request(s, "GET", key);
export const putObject = (s: Settings, key: string, body: Uint8Array, contentType?: string) =>
  request(s, "PUT", key, body, contentType).then(() => undefined);

/** For the runner: put a result over 1 MiB in the workspace storage; its reference, or undefined without one. */
export async function storeResult(resultJson: string, runName: string): Promise<{ s3: string; bytes: number } | undefined> {
  const storage = workspaceStorage();
  if (!storage) return undefined;
  const key = `kubemill/results/${process.env.WM_WORKSPACE || "default"}/${runName}/result.json`;
  const body = new TextEncoder().encode(resultJson);
  await putObject(storage, key, body, "application/json");
  return { s3: key, bytes: body.length };
}

export function newUploadKey(): string {
  return `windmill_uploads/${randomUUID().replaceAll("-", "")}`;
}

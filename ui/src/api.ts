// Talking to `kubemill ui`: every request carries the signed-in person's own Kubernetes token (or none, when a
// front proxy adds the identity itself), so the API server's RBAC and admission webhooks decide.

export type Obj = {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; creationTimestamp?: string; resourceVersion?: string; uid?: string };
  spec: any;
  status?: any;
  resolvedResult?: unknown;
};

/** A location in the UI (hash routing: `#/ns/<namespace>/<view>/...`). */
export const href = (ns: string, ...rest: string[]) => "#/" + ["ns", ns, ...rest].map(encodeURIComponent).join("/");

const TOKEN_KEY = "kubemill.token";

export const session = {
  get token(): string {
    return sessionStorage.getItem(TOKEN_KEY) ?? "";
  },
  set token(value: string) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
};

export class ApiError extends Error {
  constructor(public status: number, message: string) {
    super(message);
  }
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const h: Record<string, string> = { ...extra };
  if (session.token) h["Authorization"] = `Bearer ${session.token}`;
  return h;
}

async function failure(response: Response): Promise<ApiError> {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    return new ApiError(response.status, body?.error?.message ?? body?.message ?? text);
  } catch {
    return new ApiError(response.status, text || response.statusText);
  }
}

export async function getJson<T>(path: string): Promise<T> {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw await failure(response);
  return (await response.json()) as T;
}

export async function postJson(path: string, body: unknown): Promise<Response> {
  const response = await fetch(path, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await failure(response);
  return response;
}

export const whoami = () => getJson<{ username: string; groups: string[] }>("/api/ui/whoami");
export const namespaces = () => getJson<{ items: string[] }>("/api/ui/namespaces");
export const list = (ns: string, plural: string) =>
  getJson<{ items: Obj[] }>(`/api/ui/ns/${encodeURIComponent(ns)}/${plural}`).then((r) => r.items);
export const get = (ns: string, plural: string, name: string) =>
  getJson<Obj>(`/api/ui/ns/${encodeURIComponent(ns)}/${plural}/${encodeURIComponent(name)}`);

/** Start a run through the Windmill-compatible endpoint; returns the run's name. */
export async function startRun(ns: string, target: "p" | "f", path: string, args: unknown): Promise<string> {
  const response = await postJson(`/api/w/${encodeURIComponent(ns)}/jobs/run/${target}/${path}`, args);
  return (await response.text()).trim();
}

/** A ScriptRun's stored (masked) log, and whether it is final. */
export async function fetchLog(ns: string, name: string): Promise<{ text: string; final: boolean }> {
  const response = await fetch(`/api/ui/ns/${encodeURIComponent(ns)}/scriptruns/${encodeURIComponent(name)}/log`, {
    headers: headers(),
  });
  if (!response.ok) throw await failure(response);
  return { text: await response.text(), final: response.headers.get("X-Kubemill-Log-Final") === "true" };
}

export async function decide(
  ns: string,
  run: string,
  decision: { step: string; decision: "approve" | "reject"; comment?: string; payload?: unknown },
): Promise<void> {
  await postJson(`/api/ui/ns/${encodeURIComponent(ns)}/flowruns/${encodeURIComponent(run)}/decision`, decision);
}

/** Read a streamed answer line by line until `signal` aborts or the server ends it. */
export async function stream(path: string, onChunk: (text: string) => void, signal: AbortSignal): Promise<void> {
  const response = await fetch(path, { headers: headers(), signal });
  if (!response.ok || !response.body) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onChunk(value);
  }
}

/** Follow an object: `onObject` gets it now and after each change. */
export function watch(ns: string, plural: string, name: string, onObject: (o: Obj) => void, signal: AbortSignal) {
  let buffer = "";
  return stream(
    `/api/ui/ns/${encodeURIComponent(ns)}/${plural}/${encodeURIComponent(name)}/watch`,
    (chunk) => {
      buffer += chunk;
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 1);
        if (line.trim()) onObject(JSON.parse(line));
      }
    },
    signal,
  );
}

// The kubemill UI: sign in with a Kubernetes token, browse a namespace's scripts, flows, schedules and runs,
// start a run from a form generated from the JSON Schema, and follow it live (run.tsx).
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { ApiError, get, href, list, namespaces, session, startRun, whoami, type Obj } from "./api";
import { SchemaForm, initialValue, missingRequired, type Schema } from "./form";
import { RunView } from "./run";
import "./style.css";

type Route = { ns: string; view: string; kind?: string; name?: string };

function parseRoute(): Route {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "ns" && parts[1]) return { ns: parts[1], view: parts[2] || "scripts", kind: parts[3], name: parts[4] };
  return { ns: localStorage.getItem("kubemill.ns") || "default", view: "scripts" };
}


function useRoute(): Route {
  const [route, setRoute] = useState(parseRoute());
  useEffect(() => {
    const on = () => setRoute(parseRoute());
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return route;
}

function SignIn(props: { onSignedIn: (user: string) => void; error: string }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState(props.error);
  return (
    <form
      class="card sign-in"
      onSubmit={async (e) => {
        e.preventDefault();
        session.token = token.trim();
        try {
          props.onSignedIn((await whoami()).username);
        } catch (err) {
          session.token = "";
          setError((err as Error).message);
        }
      }}
    >
      <h1>kubemill</h1>
      <p>Sign in with your Kubernetes bearer token. Everything you do here is done as you: Kubernetes RBAC and the approval webhook decide, exactly as for kubectl.</p>
      <label for="token">Token</label>
      <input id="token" type="password" autocomplete="off" value={token} onInput={(e) => setToken((e.target as HTMLInputElement).value)} />
      <button type="submit">Sign in</button>
      {error && <p class="error" role="alert">{error}</p>}
    </form>
  );
}

function App() {
  const [user, setUser] = useState<string | null>(null);
  const [checked, setChecked] = useState(false);
  const route = useRoute();
  useEffect(() => {
    // A front proxy may add the identity itself; otherwise a stored token signs us in again.
    whoami()
      .then((me) => setUser(me.username))
      .catch(() => undefined)
      .finally(() => setChecked(true));
  }, []);
  if (!checked) return <p class="muted">…</p>;
  if (!user) return <SignIn onSignedIn={setUser} error="" />;
  localStorage.setItem("kubemill.ns", route.ns);
  return (
    <div class="shell">
      <header>
        <a class="brand" href={href(route.ns, "scripts")}>kubemill</a>
        <NamespacePicker ns={route.ns} />
        <nav>
          {["scripts", "flows", "schedules", "runs"].map((v) => (
            <a class={route.view === v ? "active" : ""} href={href(route.ns, v)}>{v}</a>
          ))}
        </nav>
        <span class="user" data-testid="user">{user}</span>
        <button class="small" onClick={() => { session.token = ""; setUser(null); }}>sign out</button>
      </header>
      <main>
        <Page route={route} />
      </main>
    </div>
  );
}

function NamespacePicker(props: { ns: string }) {
  const [all, setAll] = useState<string[] | null>(null);
  useEffect(() => { namespaces().then((r) => setAll(r.items)).catch(() => setAll(null)); }, []);
  const go = (ns: string) => { if (ns) location.hash = href(ns, "scripts"); };
  return all ? (
    <select aria-label="namespace" value={props.ns} onChange={(e) => go((e.target as HTMLSelectElement).value)}>
      {!all.includes(props.ns) && <option>{props.ns}</option>}
      {all.map((n) => <option>{n}</option>)}
    </select>
  ) : (
    <input aria-label="namespace" value={props.ns} onChange={(e) => go((e.target as HTMLInputElement).value.trim())} />
  );
}

function Page({ route }: { route: Route }) {
  if (route.view === "run" && route.kind && route.name) return <RunView ns={route.ns} plural={route.kind} name={route.name} />;
  if ((route.view === "scripts" || route.view === "flows") && route.name)
    return <Definition ns={route.ns} plural={route.view} name={route.name} />;
  if (route.view === "runs") return <Runs ns={route.ns} />;
  return <Listing ns={route.ns} plural={route.view} />;
}

export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): [T | null, string] {
  const [value, setValue] = useState<T | null>(null);
  const [error, setError] = useState("");
  useEffect(() => {
    let current = true; // an answer for earlier deps (another namespace) must not overwrite this one
    setValue(null);
    setError("");
    load()
      .then((v) => current && setValue(v))
      .catch((e: Error) => current && setError(e.message));
    return () => {
      current = false;
    };
  }, deps);
  return [value, error];
}

const ready = (o: Obj) => (o.status?.conditions ?? []).find((c: any) => c.type === "Ready");

function Listing({ ns, plural }: { ns: string; plural: string }) {
  const [items, error] = useLoad(() => list(ns, plural), [ns, plural]);
  if (error) return <p class="error" role="alert">{error}</p>;
  if (!items) return <p class="muted">loading…</p>;
  if (!items.length) return <p class="muted">No {plural} in {ns}.</p>;
  if (plural === "schedules")
    return (
      <table>
        <thead><tr><th>name</th><th>schedule</th><th>runs</th><th>enabled</th><th>next run</th><th>last run</th></tr></thead>
        <tbody>
          {items.map((s) => (
            <tr>
              <td>{s.metadata.name}</td><td><code>{s.spec.schedule}</code> {s.spec.timezone}</td>
              <td>{s.spec.scriptPath ?? s.spec.flowPath}</td><td>{String(s.spec.enabled ?? true)}</td>
              <td>{s.status?.nextRunAt ?? ""}</td><td>{s.status?.lastRun?.phase ?? ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
    );
  return (
    <table>
      <thead><tr><th>path</th><th>{plural === "scripts" ? "language" : "summary"}</th><th>ready</th></tr></thead>
      <tbody>
        {items.map((o) => (
          <tr>
            <td><a href={href(ns, plural, "", o.metadata.name)}>{o.spec.path}</a></td>
            <td>{plural === "scripts" ? o.spec.language : o.spec.summary}</td>
            <td title={ready(o)?.message}>{ready(o)?.status ?? ""}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function Definition({ ns, plural, name }: { ns: string; plural: string; name: string }) {
  const [obj, error] = useLoad(() => get(ns, plural, name), [ns, plural, name]);
  const [args, setArgs] = useState<any>(undefined);
  const [runError, setRunError] = useState("");
  const [busy, setBusy] = useState(false);
  const schema: Schema | undefined = obj && (obj.spec.schema ?? obj.status?.schema);
  useEffect(() => { if (obj) setArgs(initialValue(schema) ?? {}); }, [obj]);
  if (error) return <p class="error" role="alert">{error}</p>;
  if (!obj || args === undefined) return <p class="muted">loading…</p>;
  const target = plural === "scripts" ? "p" : "f";
  return (
    <section class="card">
      <h2>{obj.spec.path}</h2>
      {obj.spec.summary && <p>{obj.spec.summary}</p>}
      {obj.spec.description && <p class="description">{obj.spec.description}</p>}
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          const missing = missingRequired(schema, args);
          if (missing.length) { setRunError(`required: ${missing.join(", ")}`); return; }
          setBusy(true);
          setRunError("");
          try {
            const run = await startRun(ns, target, obj.spec.path, args);
            location.hash = href(ns, "run", target === "p" ? "scriptruns" : "flowruns", run);
          } catch (err) {
            setRunError(err instanceof ApiError ? `${err.status}: ${err.message}` : String(err));
          } finally {
            setBusy(false);
          }
        }}
      >
        <SchemaForm schema={schema} value={args} onChange={setArgs} ns={ns} />
        <details><summary>args as JSON</summary><pre data-testid="args-json">{JSON.stringify(args, null, 2)}</pre></details>
        <button type="submit" disabled={busy}>Run</button>
        {runError && <p class="error" role="alert">{runError}</p>}
      </form>
    </section>
  );
}

function Runs({ ns }: { ns: string }) {
  const [runs, error] = useLoad(
    async () => {
      const [s, f] = await Promise.all([list(ns, "scriptruns"), list(ns, "flowruns")]);
      return [...s.map((r) => ["scriptruns", r] as const), ...f.map((r) => ["flowruns", r] as const)]
        .filter(([, r]) => !r.spec.flowRun)
        .sort((a, b) => (b[1].metadata.creationTimestamp ?? "").localeCompare(a[1].metadata.creationTimestamp ?? ""));
    },
    [ns],
  );
  if (error) return <p class="error" role="alert">{error}</p>;
  if (!runs) return <p class="muted">loading…</p>;
  if (!runs.length) return <p class="muted">No runs in {ns}.</p>;
  return (
    <table>
      <thead><tr><th>run</th><th>what</th><th>phase</th><th>created</th></tr></thead>
      <tbody>
        {runs.map(([plural, r]) => (
          <tr>
            <td><a href={href(ns, "run", plural, r.metadata.name)}>{r.metadata.name}</a></td>
            <td>{r.spec.scriptPath ?? r.spec.flowPath ?? "inline script"}</td>
            <td><span class={`phase phase-${r.status?.phase ?? "Pending"}`}>{r.status?.phase ?? "Pending"}</span></td>
            <td>{r.metadata.creationTimestamp}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

render(<App />, document.getElementById("app")!);

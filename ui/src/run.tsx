// A run, live: its phase, the step graph of a flow with each step's state, logs as they stream, the result as
// JSON, errors, and the approval panel for a suspended step (comment and `resume_form` payload).
import { useEffect, useState } from "preact/hooks";
import { ApiError, decide, fetchLog, href, list, watch, type Obj } from "./api";
import { SchemaForm, initialValue, type Schema } from "./form";

const TERMINAL = ["Succeeded", "Failed", "Cancelled"];

export function RunView({ ns, plural, name }: { ns: string; plural: string; name: string }) {
  const [run, setRun] = useState<Obj | null>(null);
  const [error, setError] = useState("");
  // The answer to this person's last approve/reject: kept here, not in the panel, because an approval that
  // lets the flow go on removes the panel at once.
  const [decision, setDecision] = useState<Message | null>(null);
  useEffect(() => {
    setRun(null);
    setDecision(null);
    const abort = new AbortController();
    const follow = () =>
      watch(ns, plural, name, setRun, abort.signal)
        .then(() => { if (!abort.signal.aborted) setTimeout(follow, 1000); })
        .catch((e: Error) => { if (!abort.signal.aborted) setError(e.message); });
    follow();
    return () => abort.abort();
  }, [ns, plural, name]);
  if (error && !run) return <p class="error" role="alert">{error}</p>;
  if (!run) return <p class="muted">loading…</p>;
  const status = run.status ?? {};
  const phase: string = status.phase ?? "Pending";
  const result = run.resolvedResult !== undefined ? run.resolvedResult : status.result;
  return (
    <section class="card run">
      <h2>
        {run.spec.scriptPath ?? run.spec.flowPath ?? "inline script"} <small>{name}</small>
      </h2>
      <p>
        <span class={`phase phase-${phase}`} data-testid="phase">{phase}</span>
        {status.currentStep && <span class="muted"> at step {status.currentStep}</span>}
        {status.attempts > 1 && <span class="muted"> · attempt {status.attempts}</span>}
        {run.spec.flowRun && <> · part of <a href={href(ns, "run", "flowruns", run.spec.flowRun)}>{run.spec.flowRun}</a></>}
      </p>
      <details><summary>args</summary><pre>{JSON.stringify(run.spec.args ?? {}, null, 2)}</pre></details>
      {status.error && (
        <div class="error run-error" role="alert" data-testid="run-error">
          <strong>{status.error.name}</strong>{status.error.step && <> in step {status.error.step}</>}: {status.error.message}
          {status.error.stack && <pre>{status.error.stack}</pre>}
        </div>
      )}
      {(status.pendingApprovals ?? []).map((p: any) => (
        <ApprovalPanel ns={ns} run={name} pending={p} key={p.step} onDecision={setDecision} />
      ))}
      {decision && (
        <p class={decision.ok ? "ok" : "error"} role={decision.ok ? "status" : "alert"} data-testid="approval-message">
          {decision.text}
        </p>
      )}
      {plural === "flowruns" && <StepGraph ns={ns} run={run} />}
      {TERMINAL.includes(phase) && phase === "Succeeded" && (
        <>
          <h3>Result</h3>
          <pre class="result" data-testid="result">{JSON.stringify(result, null, 2)}</pre>
        </>
      )}
      {(status.approvals ?? []).length > 0 && <Ledger approvals={status.approvals} />}
      {plural === "scriptruns" && <Logs ns={ns} name={name} pod={status.pod?.name} finished={TERMINAL.includes(phase)} />}
    </section>
  );
}

// A ScriptRun's stored log: masked by the operator, kept after the pod is gone, refreshed while it runs (so it
// is polled until the server says it is final). Flow steps show the log of their child run.
function Logs({ ns, name, pod, finished, title = "Logs" }: {
  ns: string; name: string; pod?: string; finished: boolean; title?: string;
}) {
  const [text, setText] = useState("");
  const [note, setNote] = useState("");
  useEffect(() => {
    let stop = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const load = () =>
      fetchLog(ns, name)
        .then(({ text, final }) => {
          if (stop) return;
          setText(text);
          setNote("");
          if (!final) timer = setTimeout(load, 2000);
        })
        .catch((e: Error) => { if (!stop) setNote(e.message); });
    load();
    return () => { stop = true; if (timer) clearTimeout(timer); };
  }, [ns, name, pod, finished]);
  return (
    <>
      {title && <h3>{title}</h3>}
      <pre class="logs" data-testid="logs">{text || (pod || finished ? "" : "waiting for the pod…")}</pre>
      {note && <p class="muted">{note}</p>}
    </>
  );
}

function StepLog({ ns, run }: { ns: string; run: string }) {
  const [open, setOpen] = useState(false);
  return (
    <details class="step-log" data-testid="step-log" onToggle={(e) => setOpen((e.target as HTMLDetailsElement).open)}>
      <summary>log</summary>
      {open && <Logs ns={ns} name={run} finished={false} title="" />}
    </details>
  );
}

function useFlow(ns: string, path: string): Obj | null {
  const [flow, setFlow] = useState<Obj | null>(null);
  useEffect(() => {
    list(ns, "flows").then((fs) => setFlow(fs.find((f) => f.spec.path === path) ?? null)).catch(() => setFlow(null));
  }, [ns, path]);
  return flow;
}

function StepGraph({ ns, run }: { ns: string; run: Obj }) {
  const flow = useFlow(ns, run.spec.flowPath);
  const steps: Record<string, any> = run.status?.steps ?? {};
  if (!flow) return <p class="muted">step graph: the flow {run.spec.flowPath} is not readable</p>;
  return (
    <>
      <h3>Steps</h3>
      <div class="graph" data-testid="step-graph">
        <Modules ns={ns} modules={flow.spec.value?.modules ?? []} steps={steps} />
      </div>
    </>
  );
}

function Modules({ ns, modules, steps }: { ns: string; modules: any[]; steps: Record<string, any> }) {
  return (
    <ol class="modules">
      {modules.map((m) => (
        <li><Step ns={ns} module={m} steps={steps} /></li>
      ))}
    </ol>
  );
}

function Step({ ns, module, steps }: { ns: string; module: any; steps: Record<string, any> }) {
  const record = steps[module.id];
  const phase: string = record?.phase ?? "Waiting";
  const v = module.value ?? {};
  const child = record?.run;
  const childPlural = v.type === "flow" ? "flowruns" : "scriptruns";
  const iterations = Object.keys(steps).filter((k) => k.startsWith(module.id + "/")).length;
  return (
    <div class={`step step-${phase}`} data-step={module.id} data-phase={phase}>
      <div class="step-head">
        <strong>{module.id}</strong> <span class="muted">{v.type}{v.path ? ` ${v.path}` : ""}</span>
        <span class={`phase phase-${phase}`}>{phase}</span>
        {child && <a href={href(ns, "run", childPlural, child)}>run</a>}
        {record?.count !== undefined && record?.count !== null && <span class="muted"> · {record.count} iterations</span>}
        {!record?.count && iterations > 0 && <span class="muted"> · {iterations} step records</span>}
      </div>
      {module.summary && <div class="muted">{module.summary}</div>}
      {record?.error && <div class="error">{record.error.message}</div>}
      {child && childPlural === "scriptruns" && <StepLog ns={ns} run={child} />}
      {(v.type === "branchone" || v.type === "branchall") && (
        <div class="branches">
          {(v.branches ?? []).map((b: any, i: number) => (
            <div class={`branch ${record?.branch === i ? "taken" : ""}`}>
              <div class="muted">{b.summary ?? `branch ${i}`}{b.expr ? `: ${b.expr}` : ""}</div>
              <Modules ns={ns} modules={b.modules ?? []} steps={steps} />
            </div>
          ))}
          {v.default && v.default.length > 0 && (
            <div class="branch"><div class="muted">default</div><Modules ns={ns} modules={v.default} steps={steps} /></div>
          )}
        </div>
      )}
      {(v.type === "forloopflow" || v.type === "whileloopflow") && <Modules ns={ns} modules={v.modules ?? []} steps={steps} />}
    </div>
  );
}

type Message = { ok: boolean; text: string };

function ApprovalPanel({ ns, run, pending, onDecision }: {
  ns: string; run: string; pending: any; onDecision: (m: Message | null) => void;
}) {
  const form: Schema | undefined = pending.form?.schema ?? pending.form;
  const [comment, setComment] = useState("");
  const [payload, setPayload] = useState<any>(initialValue(form));
  const send = async (decision: "approve" | "reject") => {
    onDecision(null);
    try {
      await decide(ns, run, { step: pending.step, decision, comment: comment || undefined, payload: form ? payload : undefined });
      onDecision({ ok: true, text: decision === "approve" ? "Approved." : "Rejected." });
    } catch (e) {
      onDecision({ ok: false, text: e instanceof ApiError ? `${e.status}: ${e.message}` : String(e) });
    }
  };
  return (
    <div class="approval" data-testid="approval">
      <h3>Waiting for approval: {pending.step}</h3>
      <p class="muted">
        approvers: {(pending.approvers ?? []).join(", ") || "anyone allowed"}
        {pending.requiredEvents > 1 && ` · ${pending.requiredEvents} approvals needed`}
        {pending.deadline && ` · until ${pending.deadline}`}
      </p>
      {form && form.properties && (
        <fieldset><legend>resume payload</legend><SchemaForm schema={form} value={payload} onChange={setPayload} ns={ns} idPrefix="resume" /></fieldset>
      )}
      <label for="approval-comment">Comment</label>
      <textarea id="approval-comment" rows={2} value={comment} onInput={(e) => setComment((e.target as HTMLTextAreaElement).value)} />
      <div class="buttons">
        <button onClick={() => send("approve")}>Approve</button>
        <button class="danger" onClick={() => send("reject")}>Reject</button>
      </div>
    </div>
  );
}

function Ledger({ approvals }: { approvals: any[] }) {
  return (
    <>
      <h3>Approvals</h3>
      <table data-testid="ledger">
        <thead><tr><th>step</th><th>who</th><th>decision</th><th>when</th><th>comment</th></tr></thead>
        <tbody>
          {approvals.map((a) => (
            <tr><td>{a.step}</td><td>{a.user}</td><td>{a.decision}</td><td>{a.at}</td><td>{a.comment ?? ""}</td></tr>
          ))}
        </tbody>
      </table>
    </>
  );
}

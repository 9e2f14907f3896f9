"""What the cluster commands print, computed from runs as the API server returns them (pure, no I/O): the
table of runs, a run's tree of steps, durations and a watched run's progress lines."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any


def where(ref: Mapping[str, Any]) -> str:
    if ref.get("s3"):
        return f"(in workspace storage, {ref['s3']}, {ref.get('bytes')} bytes)"
    return f"(in ConfigMap {ref.get('name')})"


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def duration(started: str | None, finished: str | None, now: datetime | None = None) -> str:
    start = parse_time(started)
    if start is None:
        return "-"
    end = parse_time(finished) or now or datetime.now(UTC)
    seconds = max(int((end - start).total_seconds()), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def runs_table(runs: Sequence[Mapping[str, Any]], now: datetime | None = None) -> str:
    rows = [("NAME", "KIND", "TARGET", "PHASE", "STARTED", "DURATION")]
    for run in runs:
        spec, status = run.get("spec") or {}, run.get("status") or {}
        rows.append(
            (
                run["metadata"]["name"],
                run["kind"],
                spec.get("flowPath") or spec.get("scriptPath") or "(inline)",
                status.get("phase", "Pending"),
                status.get("startedAt", "-"),
                duration(status.get("startedAt"), status.get("finishedAt"), now),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def step_tree(run: Mapping[str, Any], now: datetime | None = None) -> str:
    """A FlowRun's steps as a tree (loop iterations and branch bodies under their step), or a ScriptRun."""
    spec, status = run.get("spec") or {}, run.get("status") or {}
    name = run["metadata"]["name"]
    head = (
        f"{run['kind']} {name}  {spec.get('flowPath') or spec.get('scriptPath') or '(inline)'}  "
        f"{status.get('phase', 'Pending')}  "
        f"{duration(status.get('startedAt'), status.get('finishedAt'), now)}"
    )
    lines = [head]
    if run["kind"] == "ScriptRun" and status.get("attempts"):
        lines.append(f"  attempts: {status['attempts']}")
    steps: Mapping[str, Any] = status.get("steps") or {}
    children: dict[str, list[str]] = {}
    for key in steps:
        parent = key.rsplit("/", 2)[0] if key.count("/") >= 2 else ""
        children.setdefault(parent, []).append(key)

    def order(key: str) -> tuple[str, str]:
        return (str(steps[key].get("startedAt") or "9999"), key)

    def render(parent: str, prefix: str) -> None:
        keys = sorted(children.get(parent, []), key=order)
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            record = steps[key]
            label = key if not parent else key[len(parent) + 1 :]
            parts = [
                label,
                str(record.get("phase", "")),
                duration(record.get("startedAt"), record.get("finishedAt"), now),
            ]
            if record.get("error"):
                parts.append(f"{record['error'].get('name')}: {record['error'].get('message', '')[:120]}")
            elif record.get("result") is not None:
                parts.append("→ " + short(record["result"]))
            if record.get("run"):
                parts.append(f"({record['run']})")
            lines.append(prefix + ("└─ " if last else "├─ ") + "  ".join(parts))
            render(key, prefix + ("   " if last else "│  "))

    render("", "")
    for pending in status.get("pendingApprovals") or []:
        who = ", ".join(pending.get("approvers") or []) or "anyone"
        lines.append(f"waiting for approval of step {pending.get('step')} by {who}")
    if status.get("phase") == "Succeeded" and (status.get("result") is not None or status.get("resultRef")):
        lines.append(
            "result: "
            + (
                short(status.get("result"), 200)
                if not status.get("resultRef")
                else where(status["resultRef"])
            )
        )
    if status.get("error"):
        err = status["error"]
        step = f" at step {err['step']}" if err.get("step") else ""
        lines.append(f"error{step}: {err.get('name')}: {err.get('message', '')}")
    return "\n".join(lines)


def progress_lines(kind: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[str]:
    """What changed between two statuses, a line per step that moved, then the run's phase."""
    if kind == "FlowRun":
        before = old.get("steps") or {}
        for step, record in (new.get("steps") or {}).items():
            phase = record.get("phase")
            if (before.get(step) or {}).get("phase") != phase:
                extra = ""
                if record.get("error"):
                    extra = f": {record['error'].get('name')}: {record['error'].get('message', '')[:200]}"
                yield f"  step {step}: {phase}{extra}"
        waiting = {p.get("step") for p in old.get("pendingApprovals") or []}
        for pending in new.get("pendingApprovals") or []:
            if pending.get("step") not in waiting:
                who = ", ".join(pending.get("approvers") or []) or "anyone"
                yield f"  step {pending.get('step')}: waiting for approval by {who}"
    if old.get("phase") != new.get("phase"):
        yield f"{new.get('phase', 'Pending')}"

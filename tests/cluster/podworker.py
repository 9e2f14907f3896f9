"""One pod on the test node: its volumes, its containers as local processes, its status as kubelet reports it.

Each container runs as `unshare --mount --propagation private -- /bin/sh -c SETUP CMD...`: the shell
bind-mounts the pod's materialised volumes (and image mounts, and the termination-message file) at their
mount paths in a mount namespace of its own, checks that the command exists, and `exec`s it (dropping to
`runAsUser` with setpriv when the pod asks). The process leads a new session, so a signal to its group
reaches everything it started.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes.client.rest import ApiException
from podinputs import PodFailure, PodInputs, expand, now_iso

if TYPE_CHECKING:
    from nodeagent import Agent

log = logging.getLogger("nodeagent.pod")

TERMINATION_MESSAGE_LIMIT = 4096
STAGE_ROOT = Path("/run/kubemill-node")
FALLBACK_LOG_LINES = 80


class PodWorker(threading.Thread):
    def __init__(self, agent: Agent, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.agent = agent
        self.pod = pod
        self.spec: dict[str, Any] = pod["spec"]
        self.uid: str = meta["uid"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.dir = agent.state_dir / "pods" / self.uid
        self.stage_dir = STAGE_ROOT / self.uid  # where hidden host paths are set aside (see _run_once)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.statuses: dict[str, dict[str, Any]] = {}
        self.init_statuses: dict[str, dict[str, Any]] = {}
        self.status_lock = threading.Lock()
        self.deleting = threading.Event()  # the API server asked for the pod to go: delete it once stopped
        self.stopped = threading.Event()  # the containers are being killed: start and restart nothing
        self.grace = 30
        self.failure: tuple[str, str] | None = None  # pod-level reason/message (DeadlineExceeded, ...)
        self.start_time = now_iso()
        self.initialized = False
        self.inputs = PodInputs(
            agent.core, pod, self.dir, agent.node_name, agent.api_server, agent.container_path
        )

    # -- what the agent calls -------------------------------------------------------------------------------

    def log_path(self, container: str) -> Path:
        return self.dir / "logs" / f"{container}.log"

    def container_running(self, container: str) -> bool:
        proc = self.procs.get(container)
        return proc is not None and proc.poll() is None

    def request_delete(self, pod: dict[str, Any]) -> None:
        if self.deleting.is_set():
            return
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        self.grace = int(grace) if grace is not None else 30
        self.deleting.set()
        threading.Thread(target=self.kill, args=(self.grace,), daemon=True).start()

    def kill(self, grace: float) -> None:
        """SIGTERM every container's process group, SIGKILL what is left after `grace` seconds."""
        self.stopped.set()
        procs = [p for p in list(self.procs.values()) if p.poll() is None]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    # -- the pod's life -------------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except PodFailure as exc:
            self.failure = (exc.reason, exc.message)
            self._report()
        except Exception as exc:  # an agent bug must still end the pod visibly, not hang it
            log.exception("pod %s/%s failed in the agent", self.namespace, self.name)
            self.failure = ("NodeAgentError", str(exc))
            self._report()
        finally:
            shutil.rmtree(
                self.stage_dir, ignore_errors=True
            )  # empty mount points; the mounts died with the pod
            self.agent.finished(self.uid)
            if self.deleting.is_set():
                self.agent.delete_pod(self.namespace, self.name, self.uid)

    def _run(self) -> None:
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.dir / "meta.json").write_text(json.dumps({"namespace": self.namespace, "name": self.name}))
        for c in self.spec.get("initContainers") or []:
            self.init_statuses[c["name"]] = self._waiting(c, "PodInitializing")
        for c in self.spec.get("containers") or []:
            self.statuses[c["name"]] = self._waiting(c, "ContainerCreating")
        self._report()
        deadline = self.spec.get("activeDeadlineSeconds")
        if deadline is not None:
            timer = threading.Timer(float(deadline), self._deadline_exceeded)
            timer.daemon = True
            timer.start()
        volumes = self._materialise_volumes()
        if volumes is None:
            return
        for c in self.spec.get("initContainers") or []:
            if self._run_container(c, self.init_statuses, init=True) != 0 or self.stopped.is_set():
                self._report()
                return
        self.initialized = True
        threads = [
            threading.Thread(target=self._run_container, args=(c, self.statuses), daemon=True)
            for c in self.spec.get("containers") or []
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._report()

    def _deadline_exceeded(self) -> None:
        if self.failure is None and not self._finished():
            self.failure = (
                "DeadlineExceeded",
                "Pod was active on the node longer than the specified deadline",
            )
            self.kill(grace=float(self.spec.get("terminationGracePeriodSeconds", 30)))

    def _finished(self) -> bool:
        return all("terminated" in s["state"] for s in self.statuses.values())

    # -- volumes --------------------------------------------------------------------------------------------

    def _materialise_volumes(self) -> dict[str, Path] | None:
        """Write every volume's files; retry like kubelet while a ConfigMap/Secret is not there yet."""
        while True:
            try:
                return {v["name"]: self.inputs.volume(v) for v in self.spec.get("volumes") or []}
            except ApiException as exc:
                if exc.status not in (403, 404) or self.stopped.is_set():
                    raise
                if self.failure is not None:
                    return None
                message = f"MountVolume.SetUp failed: {exc.reason}"
                for s in self.statuses.values():
                    s["state"] = {"waiting": {"reason": "ContainerCreating", "message": message}}
                self._report()
                if self.stopped.wait(1.0):
                    return None

    def _mounts(self, c: dict[str, Any], volumes: dict[str, Path]) -> list[tuple[Path, str, bool]]:
        mounts: list[tuple[Path, str, bool]] = []
        for im in self.agent.image_mounts:
            if fnmatch.fnmatch(c.get("image", ""), im.pattern):
                mounts.append((Path(im.host_dir), im.mount_path, True))
        for m in c.get("volumeMounts") or []:
            src = volumes[m["name"]]
            if m.get("subPath"):
                src = src / m["subPath"]
            mounts.append((src, m["mountPath"], bool(m.get("readOnly"))))
        return mounts

    def _run_container(
        self, c: dict[str, Any], statuses: dict[str, dict[str, Any]], init: bool = False
    ) -> int:
        policy = self.spec.get("restartPolicy", "Always")
        restarts = 0
        while True:
            code = self._run_once(c, statuses, restarts)
            if self.stopped.is_set() or self.failure is not None:
                return code
            again = (policy == "OnFailure" and code != 0) or (policy == "Always" and (not init or code != 0))
            if not again:
                return code
            restarts += 1
            if self.stopped.wait(min(10.0, 0.5 * 2**restarts)):
                return code

    def _stage_hidden_sources(self, mounts: list[tuple[Path, str, bool]], prefix: str) -> list[str]:
        """A volume's source under another mount's destination (a hostPath volume under /tmp, where the
        runner's emptyDir goes, as on a checkout cloned under /tmp) is hidden by the time its turn comes: it
        is bind-mounted aside before any mount, and mounted from there. `mounts` is rewritten in place."""
        setup = []
        for index, (src, dst, ro) in enumerate(mounts):
            if not any(src.is_relative_to(Path(d)) for _, d, _ in mounts):
                continue
            stage = self.stage_dir / f"{prefix}-source-{index}"
            if src.is_dir():
                stage.mkdir(parents=True, exist_ok=True)
            else:
                stage.parent.mkdir(parents=True, exist_ok=True)
                stage.touch()
            setup.append(f"mount --bind {shlex.quote(str(src))} {shlex.quote(str(stage))}")
            mounts[index] = (stage, dst, ro)
        return setup

    def _run_once(self, c: dict[str, Any], statuses: dict[str, dict[str, Any]], restarts: int) -> int:  # noqa: C901, PLR0912, PLR0915
        name = c["name"]
        volumes = {v["name"]: self.dir / "volumes" / v["name"] for v in self.spec.get("volumes") or []}
        for v in self.spec.get("volumes") or []:
            if "hostPath" in v:
                volumes[v["name"]] = Path(v["hostPath"]["path"])
            elif "persistentVolumeClaim" in v:
                volumes[v["name"]] = self.inputs.claim_path(v["persistentVolumeClaim"]["claimName"])
        started = now_iso()
        term_path = self.dir / "termination" / f"{name}-{restarts}"
        term_path.parent.mkdir(exist_ok=True)
        term_path.write_bytes(b"")
        term_path.chmod(0o666)
        notfound = self.dir / "termination" / f"{name}-{restarts}.notfound"
        try:
            env = self.inputs.env(c)
            uid, gid = self.inputs.user(c)
            argv = [expand(a, env) for a in (c.get("command") or []) + (c.get("args") or [])]
            if not c.get("command"):
                raise PodFailure(
                    "CreateContainerConfigError",
                    f"container {name!r} has no command: the node agent cannot run image entrypoints",
                )
        except PodFailure as exc:
            statuses[name] = self._terminated(c, 128, exc.reason, exc.message, started, restarts)
            self._report()
            return 128
        mounts = self._mounts(c, volumes)
        mounts.append((term_path, c.get("terminationMessagePath", "/dev/termination-log"), False))
        # A mount over an ancestor of a host path the container needs (an emptyDir at /tmp while the
        # cluster's state, or the checkout with its virtualenv, lives under /tmp) would hide it. Such
        # mounts go last, and the hidden paths are bind-mounted aside first and put back on top afterwards
        # (the repository read-only), the way an image would have had them.
        # Mounts inside such a mount (a volume at /tmp/shared) follow it, parents before children.
        keeps = (self.dir, *self.agent.keep_visible)
        covering = [Path(d) for _, d, _ in mounts if any(k.is_relative_to(Path(d)) for k in keeps)]
        mounts.sort(
            key=lambda m: (
                any(Path(m[1]).is_relative_to(c) for c in covering),
                len(Path(m[1]).parts),
            )
        )
        setup = ["set -e"]
        restore = []
        for i, keep in enumerate((self.dir, *self.agent.keep_visible)):
            if not any(keep.is_relative_to(Path(dst)) for _, dst, _ in mounts):
                continue
            stage = self.stage_dir / f"{name}-{restarts}-{i}"
            stage.mkdir(parents=True, exist_ok=True)
            setup.append(f"mount --bind {shlex.quote(str(keep))} {shlex.quote(str(stage))}")
            restore.append(f"mkdir -p {shlex.quote(str(keep))}")
            restore.append(f"mount --bind {shlex.quote(str(stage))} {shlex.quote(str(keep))}")
            if keep != self.dir:
                restore.append(f"mount -o remount,bind,ro {shlex.quote(str(keep))}")
        setup += self._stage_hidden_sources(mounts, f"{name}-{restarts}")
        for index, (src, dst, ro) in enumerate(mounts):
            target = Path(dst)
            if src.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                if any(target.is_relative_to(Path(m[1])) for m in mounts[:index]):  # inside a volume
                    setup.append(f"mkdir -p {shlex.quote(dst)}")
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    target.touch()
            setup.append(f"mount --bind {shlex.quote(str(src))} {shlex.quote(dst)}")
            if ro:
                setup.append(f"mount -o remount,bind,ro {shlex.quote(dst)}")
        setup += restore
        setup.append(f"cd {shlex.quote(c.get('workingDir') or '/')}")
        setup.append(
            'command -v "$1" >/dev/null 2>&1 || { printf %s "$1" > '
            f"{shlex.quote(str(notfound))}; exit 127; }}"
        )
        drop = ""
        if uid is not None:
            drop = (
                f"setpriv --reuid={int(uid)} --regid={int(gid if gid is not None else uid)} --clear-groups "
            )
        setup.append(f'exec {drop}"$@"')
        logfile = open(self.log_path(name), "ab")  # noqa: SIM115 - handed to the process
        try:
            proc = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                    "/bin/sh",
                    "-c",
                    "\n".join(setup),
                    "kubemill-container",
                    *argv,
                ],
                env=env,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd="/",
            )
        finally:
            logfile.close()
        self.procs[name] = proc
        statuses[name] = self._status(c, {"running": {"startedAt": started}}, restarts, ready=True)
        self._report()
        code = proc.wait()
        if code < 0:
            code = 128 - code  # killed by a signal: kubelet reports 128+signo
        if notfound.exists():
            missing = notfound.read_text()
            statuses[name] = self._terminated(
                c,
                128,
                "StartError",
                f'failed to create containerd task: exec: "{missing}": executable file not found in $PATH',
                started,
                restarts,
            )
        else:
            message = term_path.read_bytes()[:TERMINATION_MESSAGE_LIMIT].decode(errors="replace")
            if not message and code != 0 and c.get("terminationMessagePolicy") == "FallbackToLogsOnError":
                lines = self.log_path(name).read_bytes().splitlines()[-FALLBACK_LOG_LINES:]
                message = b"\n".join(lines)[-2048:].decode(errors="replace")
            statuses[name] = self._terminated(
                c, code, "Completed" if code == 0 else "Error", message, started, restarts
            )
        self._report()
        return 128 if notfound.exists() else code

    # -- status ---------------------------------------------------------------------------------------------

    def _status(
        self, c: dict[str, Any], state: dict[str, Any], restarts: int, ready: bool = False
    ) -> dict[str, Any]:
        return {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": "",
            "containerID": f"kubemill://{self.uid}/{c['name']}",
            "ready": ready,
            "started": "running" in state,
            "restartCount": restarts,
            "state": state,
        }

    def _waiting(self, c: dict[str, Any], reason: str) -> dict[str, Any]:
        return self._status(c, {"waiting": {"reason": reason}}, 0)

    def _terminated(
        self, c: dict[str, Any], code: int, reason: str, message: str, started: str, restarts: int
    ) -> dict[str, Any]:
        state: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": now_iso(),
            "containerID": f"kubemill://{self.uid}/{c['name']}",
        }
        if message:
            state["message"] = message
        return self._status(c, {"terminated": state}, restarts)

    def _phase(self) -> str:
        if self.failure is not None:
            return "Failed"
        inits = list(self.init_statuses.values())
        if (
            any(s["state"].get("terminated", {}).get("exitCode", 0) != 0 for s in inits)
            and self.spec.get("restartPolicy", "Always") == "Never"
        ):
            return "Failed"
        mains = list(self.statuses.values())
        if mains and all("terminated" in s["state"] for s in mains):
            policy = self.spec.get("restartPolicy", "Always")
            codes = [s["state"]["terminated"]["exitCode"] for s in mains]
            if all(code == 0 for code in codes):
                return "Succeeded" if policy != "Always" or self.stopped.is_set() else "Running"
            return "Failed" if policy == "Never" or self.stopped.is_set() else "Running"
        if any("running" in s["state"] or "terminated" in s["state"] for s in mains):
            return "Running"
        return "Pending"

    def _report(self) -> None:
        with self.status_lock:
            phase = self._phase()
            ts = now_iso()
            running = all("running" in s["state"] for s in self.statuses.values())
            done = phase in ("Succeeded", "Failed")

            def cond(kind: str, ok: bool, reason: str | None = None) -> dict[str, Any]:
                c: dict[str, Any] = {
                    "type": kind,
                    "status": "True" if ok else "False",
                    "lastTransitionTime": ts,
                    "lastProbeTime": None,
                }
                if reason and not ok:
                    c["reason"] = reason
                return c

            status: dict[str, Any] = {
                "phase": phase,
                "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": "127.0.0.1",
                "podIPs": [{"ip": "127.0.0.1"}],
                "startTime": self.start_time,
                "conditions": [
                    cond("PodReadyToStartContainers", not done),
                    cond(
                        "Initialized", self.initialized or not self.init_statuses, "ContainersNotInitialized"
                    ),
                    cond(
                        "ContainersReady",
                        running and not done,
                        "PodCompleted" if done else "ContainersNotReady",
                    ),
                    cond("Ready", running and not done, "PodCompleted" if done else "ContainersNotReady"),
                ],
                "containerStatuses": list(self.statuses.values()),
            }
            if self.init_statuses:
                status["initContainerStatuses"] = list(self.init_statuses.values())
            if self.failure is not None:
                status["reason"], status["message"] = self.failure
            try:
                self.agent.core.patch_namespaced_pod_status(self.name, self.namespace, {"status": status})
            except ApiException as exc:
                if exc.status != 404:
                    log.warning("status of %s/%s: %s %s", self.namespace, self.name, exc.status, exc.reason)

"""`kubemill worker`: a RunnerPool's agent, which claims offered runs and has the warm runner run them.

One agent per worker pod (docs/pools.md). It watches its pool's offered Jobs (suspended attempt Jobs the
operator labelled with the pool), claims one with a JSON patch whose `test` makes the claim atomic, renews the
claim while the run goes on, writes the run's files (the Job's own volumes: code, args, resources, state,
sealed on the offered Job for the pool: k8s/pool_inputs.py; the agent reads no Secret or ConfigMap) into a
fresh directory of the volume it shares with the runner container, asks the runner's fork server to run it
there with the Job's environment, and reports the runner's envelope on the Job. The agent alone holds the
pool's API identity and the pool's key; the runner container has neither. A run it cannot start (its sealed
inputs do not open) is handed back; a claim it could not renew for most of the lease is given up: the run is
killed and nothing is reported (the operator fails the attempt as `WorkerLost`). SIGTERM stops claiming; the
run under way finishes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubemill.errors import ApiRejected, ApiUnavailable, KubemillError, NotFound
from kubemill.k8s import pool_inputs
from kubemill.k8s import pools as kpools
from kubemill.k8s.client import JSON_PATCH, Kube, load_configuration
from kubemill.runners.forkserver import LOST, TIMED_OUT, Connection, ServerGone
from kubemill.runners.languages import RUN_ROOT

log = logging.getLogger("kubemill.worker")
LOG_TAIL = 64 * 1024


class Worker:
    def __init__(
        self,
        configuration: Any,
        namespace: str,
        pool: str,
        name: str,
        socket_path: str,
        lease: float,
        key_file: str,
    ) -> None:
        self.kube_configuration = configuration
        self.kube = Kube(configuration)
        self.namespace = namespace
        self.pool = pool
        self.name = name
        self.socket_path = socket_path
        self.lease = lease
        self.work = Path(socket_path).parent / "runs"
        self.offered: dict[str, dict[str, Any]] = {}
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.connection: Connection | None = None
        self.key_file = Path(key_file)
        self._key: bytes | None = None

    def key(self, fresh: bool = False) -> bytes:
        """The pool's key, from the mounted key Secret (read again when asked: a Secret volume is updated in
        place). Raises KubemillError when the file holds no key."""
        if self._key is None or fresh:
            try:
                key = pool_inputs.key_from_file_text(self.key_file.read_text())
            except OSError as exc:
                raise KubemillError(f"the pool key {self.key_file} cannot be read: {exc}") from None
            if key is None:
                raise KubemillError(f"the pool key {self.key_file} holds no {pool_inputs.KEY_BYTES}-byte key")
            self._key = key
        return self._key

    # --- the watch ------------------------------------------------------------------------------------

    def watch(self) -> None:
        """Keep `offered` current: the pool's offered Jobs (a list, then a watch; again on any error)."""
        import kubernetes

        api = kubernetes.client.BatchV1Api(kubernetes.client.ApiClient(self.kube_configuration))
        selector = f"{kpools.LABEL_POOL}={self.pool}"
        while not self.stopping.is_set():
            try:
                response = api.list_namespaced_job(
                    self.namespace, label_selector=selector, _preload_content=False
                )
                listed = json.loads(response.data)  # type: ignore[attr-defined]
                with self.changed:
                    self.offered = {
                        j["metadata"]["name"]: j for j in listed.get("items") or [] if self._is_offered(j)
                    }
                    self.changed.notify_all()
                stream = kubernetes.watch.Watch().stream(  # type: ignore[no-untyped-call]
                    api.list_namespaced_job,
                    self.namespace,
                    label_selector=selector,
                    resource_version=listed["metadata"]["resourceVersion"],
                    timeout_seconds=300,
                )
                for event in stream:
                    self._seen(event["type"], event["raw_object"])
                    if self.stopping.is_set():
                        return
            except Exception as exc:  # the API went away, or the watch expired: list again
                log.warning("watch of pool %s Jobs: %s; listing again", self.pool, exc)
                self.stopping.wait(1.0)

    def _is_offered(self, job: Mapping[str, Any]) -> bool:
        """Offered to this pool by the operator (its pod template says so, `kpools.pool_of`), unclaimed."""
        state = (job["metadata"].get("annotations") or {}).get(kpools.STATE)
        return state == "offered" and kpools.pool_of(job) == self.pool

    def _seen(self, kind: str, job: Mapping[str, Any]) -> None:
        name = job["metadata"]["name"]
        offered = kind != "DELETED" and self._is_offered(job)
        with self.changed:
            if offered:
                self.offered[name] = dict(job)
                self.changed.notify_all()
            else:
                self.offered.pop(name, None)

    # --- claiming -------------------------------------------------------------------------------------

    def serve(self) -> None:
        while not self.stopping.is_set():
            with self.changed:
                while not self.offered and not self.stopping.is_set():
                    self.changed.wait(1.0)
                if self.stopping.is_set():
                    return
                name = random.choice(sorted(self.offered))  # workers racing for the same run collide less  # noqa: S311
                job = self.offered.pop(name)
            if self._claim(name):
                self._run(job)

    def _patch(self, name: str, patch: list[dict[str, Any]]) -> None:
        self.kube.patch("batch/v1", "Job", self.namespace, name, patch, content_type=JSON_PATCH)

    def _claim(self, name: str) -> bool:
        try:
            self._patch(name, kpools.claim_patch(self.name, datetime.now(UTC)))
            return True
        except (ApiRejected, NotFound):  # another worker was first, or it fell back to a Job, or it went
            return False
        except ApiUnavailable as exc:
            log.warning("claiming %s: %s", name, exc)
            self.stopping.wait(0.5)
            return False

    # --- running --------------------------------------------------------------------------------------

    def _run(self, job: Mapping[str, Any]) -> None:
        name = job["metadata"]["name"]
        renewing = Renewal(self, name)
        renewing.start()
        run_dir = self.work / name
        shutil.rmtree(run_dir, ignore_errors=True)
        try:
            try:
                env, cwd = self._prepare(job, run_dir)
            except (OSError, KubemillError, pool_inputs.SealError) as exc:
                log.warning("run %s: its inputs cannot be opened (%s); handing it back", name, exc)
                renewing.stop()
                with contextlib.suppress(KubemillError):
                    self._patch(name, kpools.hand_back_patch(self.name))
                self.stopping.wait(1.0)  # not straight back to the same run
                return
            timeout = job["spec"].get("activeDeadlineSeconds")
            exit_code = self._execute(name, run_dir, env, cwd, float(timeout) if timeout else None, renewing)
            renewing.stop()
            if renewing.lapsed.is_set():
                log.warning("run %s: the claim lapsed (API unreachable); nothing reported", name)
                return
            self._report(name, run_dir, exit_code, timeout, renewing)
        finally:
            renewing.stop()
            shutil.rmtree(run_dir, ignore_errors=True)

    def _prepare(self, job: Mapping[str, Any], run_dir: Path) -> tuple[dict[str, str], Path]:
        """The Job's volumes as files under `run_dir` (opened from its sealed inputs), and its container's
        environment pointed at them."""
        files = self._unseal(job)
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        mapped: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            path = mount["mountPath"]
            where = run_dir / (
                path[len(RUN_ROOT) + 1 :] if path.startswith(RUN_ROOT + "/") else path.strip("/")
            )
            where.mkdir(parents=True, exist_ok=True)
            mapped[path] = where
            for relative, content in (files.get(mount["name"]) or {}).items():
                target = (where / relative).resolve()
                if not target.is_relative_to(where.resolve()):
                    raise KubemillError(f"volume {mount['name']}: the path {relative!r} leaves its volume")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
        tmp = run_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)

        def local(value: str) -> str:
            for path in sorted(mapped, key=len, reverse=True):
                if value == path or value.startswith(path + "/"):
                    return str(mapped[path]) + value[len(path) :]
            return value

        env = {e["name"]: local(str(e.get("value", ""))) for e in container.get("env") or []}
        env |= {
            "KUBEMILL_CODE_DIR": local(f"{RUN_ROOT}/code"),
            "KUBEMILL_STATE_FILE": local(f"{RUN_ROOT}/state") + "/state.json",
            "KUBEMILL_RESULT_FILE": local(f"{RUN_ROOT}/out") + "/result.json",
            "KUBEMILL_TERMINATION_LOG": local(f"{RUN_ROOT}/out") + "/termination-log",
            "KUBEMILL_LOG_RESULT": "0",
            "TMPDIR": str(tmp),
        }
        return env, tmp

    def _unseal(self, job: Mapping[str, Any]) -> pool_inputs.Files:
        meta = job["metadata"]
        text = (meta.get("annotations") or {}).get(pool_inputs.INPUTS)
        if not text:
            raise KubemillError(f"Job {meta['name']} carries no sealed inputs ({pool_inputs.INPUTS})")
        try:
            return pool_inputs.unseal(self.key(), self.namespace, meta["name"], self.pool, text)
        except pool_inputs.SealError:  # the key Secret may have been replaced: its volume updates in place
            return pool_inputs.unseal(self.key(fresh=True), self.namespace, meta["name"], self.pool, text)

    def _execute(
        self,
        name: str,
        run_dir: Path,
        env: dict[str, str],
        cwd: Path,
        timeout: float | None,
        renewing: Renewal,
    ) -> int:
        log_file = run_dir / "run.log"
        with log_file.open("wb") as output:
            for attempt in range(2):
                connection = self._connection()
                renewing.connection = connection
                try:
                    exit_code = connection.run(cwd, env, output.fileno(), timeout)
                    if exit_code == LOST:
                        self.connection = None
                    break
                except ServerGone:  # never started: a new connection may take it
                    self.connection = None
                    if attempt:
                        raise
        text = log_file.read_bytes()[-LOG_TAIL:].decode(errors="replace")
        for line in text.splitlines():
            print(f"[{name}] {line}", flush=True)
        return exit_code

    def _connection(self) -> Connection:
        deadline = time.monotonic() + 60
        while self.connection is None:
            try:
                self.connection = Connection.to(self.socket_path)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # the runner container is starting: its socket appears shortly
        return self.connection

    def _report(self, name: str, run_dir: Path, exit_code: int, timeout: Any, renewing: Renewal) -> None:
        out = run_dir / "out"
        result = (out / "result.json").read_text() if (out / "result.json").exists() else None
        summary = (out / "termination-log").read_text() if (out / "termination-log").exists() else None
        if exit_code == TIMED_OUT:
            text = json.dumps(
                {
                    "result": None,
                    "state": None,
                    "error": {
                        "name": "Timeout",
                        "message": f"the run exceeded its timeout of {timeout}s",
                        "stack": None,
                    },
                }
            )
        elif result is None and not summary:
            message = f"the runner exited with code {exit_code} without writing a result"
            text = json.dumps(
                {
                    "result": None,
                    "state": None,
                    "error": {"name": "RunnerFailed", "message": message, "stack": None},
                }
            )
        else:
            text = kpools.envelope_text(result, summary)
        while True:
            try:
                self._patch(name, kpools.report_patch(self.name, text))
                return
            except (ApiRejected, NotFound) as exc:
                log.warning("run %s: the claim is no longer ours (%s); the report is dropped", name, exc)
                return
            except ApiUnavailable as exc:
                if renewing.overdue():
                    log.warning("run %s: cannot report within the lease (%s); dropped", name, exc)
                    return
                self.stopping.wait(0.2)


def _failure(name: str, message: str) -> str:
    return json.dumps(
        {"result": None, "state": None, "error": {"name": name, "message": message, "stack": None}}
    )


class Renewal(threading.Thread):
    """Renews a claim every third of the lease; when it cannot for 80% of the lease, kills the run."""

    def __init__(self, worker: Worker, job: str) -> None:
        super().__init__(daemon=True, name=f"renew-{job}")
        self.worker, self.job = worker, job
        self.done = threading.Event()
        self.lapsed = threading.Event()
        self.last_ok = time.monotonic()
        self.connection: Connection | None = None

    def overdue(self) -> bool:
        return time.monotonic() - self.last_ok > 0.8 * self.worker.lease

    def run(self) -> None:
        while not self.done.wait(self.worker.lease / 3):
            try:
                self.worker._patch(self.job, kpools.renew_patch(self.worker.name, datetime.now(UTC)))
                self.last_ok = time.monotonic()
            except (ApiRejected, NotFound):
                self._give_up("the claim was taken away (it lapsed)")
                return
            except KubemillError as exc:
                if self.overdue():
                    self._give_up(f"the claim could not be renewed: {exc}")
                    return

    def _give_up(self, why: str) -> None:
        log.warning("run %s: %s; killing it", self.job, why)
        self.lapsed.set()
        if self.connection is not None:
            self.connection.kill_current()

    def stop(self) -> None:
        self.done.set()


# --- the command -------------------------------------------------------------------------------------------


def add_arguments_worker(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pool", required=True, help="the RunnerPool this worker serves")
    parser.add_argument(
        "--namespace", default=os.environ.get("POD_NAMESPACE", ""), help="default: $POD_NAMESPACE"
    )
    parser.add_argument(
        "--name", default=os.environ.get("POD_NAME", ""), help="this worker's name (default: $POD_NAME)"
    )
    parser.add_argument("--socket", default=kpools.SOCKET, help="the runner's fork server socket")
    parser.add_argument("--lease-seconds", type=float, default=10.0)
    parser.add_argument(
        "--key-file",
        default=f"{pool_inputs.KEY_DIR}/{pool_inputs.KEY_FILE}",
        help="the pool's key (its key Secret, mounted)",
    )
    parser.add_argument("--kubeconfig", help="default: the in-cluster identity")


def cli_worker(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.namespace or not args.name:
        print(
            "kubemill worker: --namespace and --name (or POD_NAMESPACE and POD_NAME) are required",
            file=sys.stderr,
        )
        return 2
    configuration = load_configuration(args.kubeconfig)
    worker = Worker(
        configuration, args.namespace, args.pool, args.name, args.socket, args.lease_seconds, args.key_file
    )
    signal.signal(signal.SIGTERM, lambda *_: worker.stopping.set())
    watcher = threading.Thread(target=worker.watch, daemon=True, name="watch")
    watcher.start()
    log.info("worker %s of pool %s/%s ready", args.name, args.namespace, args.pool)
    worker.serve()
    return 0

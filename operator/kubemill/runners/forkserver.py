"""Warm interpreters for runs on this machine: a fork server per language, each run a fresh forked process.

Starting Python and importing the runner costs far more than a trivial step does (docs/decisions.md, "fork
server"). `ForkServers` keeps, for as long as it is open (the length of one `kubemill run` of a flow, or a
pool worker's life), one server per language that has one (`runner_images/<language>/forkserver.py`; only
Python today); `run` hands it a run's working directory, environment and output descriptor and gets the exit
code back. The child is a new process in its own session whose only inputs are that run's files and
environment: the server imports the runner once and never reads a run's inputs, so nothing of one run is in
the memory the next one forks from. A timeout kills the run's whole process group, as a spawned run's would.
Languages without a server, or a server that died, are the caller's to spawn (`serves` says which).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from kubemill.runners.runtimes import find_interpreter, runner_images_dir

SERVED = ("python3",)
TIMED_OUT = -1
"""`ForkServers.run`'s answer when the run outlived its timeout (its process group was killed)."""
LOST = 70
"""The answer when the server died while the run was under way (what the run wrote, if anything, stands)."""


class ServerGone(RuntimeError):
    """The fork server exited or stopped answering: the caller spawns the run instead."""


class Connection:
    """One connection to a fork server: runs go through it one at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.ours = sock
        self.pending = b""
        self.lock = threading.Lock()
        self.current: int | None = None

    @classmethod
    def to(cls, path: str) -> Connection:
        """A connection to the server listening on the Unix socket `path` (a pool's runner container)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return cls(sock)

    def _reply(self, timeout: float | None) -> dict[str, int]:
        self.ours.settimeout(timeout)
        while b"\n" not in self.pending:
            chunk = self.ours.recv(4096)
            if not chunk:
                raise ServerGone("the fork server exited")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        reply: dict[str, int] = json.loads(line)
        return reply

    def run(self, cwd: Path, env: Mapping[str, str], output: int, timeout: float | None) -> int:
        body = json.dumps({"cwd": str(cwd), "env": dict(env), "timeout": timeout}).encode()
        with self.lock:
            try:
                socket.send_fds(self.ours, [len(body).to_bytes(8, "big")], [output])
                self.ours.sendall(body)
                pid = self.current = self._reply(None)["pid"]
            except OSError as exc:
                raise ServerGone(f"the fork server is gone: {exc}") from exc
            try:
                reply = self._reply(None)
            except (ServerGone, OSError):  # the run started: it is never started a second time
                self.lost(pid)
                return LOST
            finally:
                self.current = None
            return TIMED_OUT if reply.get("timedOut") else int(reply["exit"])

    def lost(self, pid: int) -> None:
        """The server died during run `pid`: what to do about the run's processes (see _Server)."""

    def kill_current(self) -> None:
        """End the run under way (the server kills its process group), from another thread."""
        if self.current is not None:
            with contextlib.suppress(OSError):
                self.ours.sendall(b"k")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.ours.close()


class _Server(Connection):
    """A server of our own, started with a socket pair, for `kubemill run`."""

    def __init__(self, language: str) -> None:
        script = runner_images_dir() / language / "forkserver.py"
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.process = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
            [find_interpreter(language), str(script), str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            close_fds=True,
        )
        theirs.close()
        super().__init__(ours)

    def lost(self, pid: int) -> None:
        _kill_group(pid)  # our own child's children, in our PID namespace: nothing of the run lives on

    def close(self) -> None:
        super().close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class ForkServers:
    """One warm server per served language, started on first use, ended by `close` (or `with`)."""

    def __init__(self) -> None:
        self._servers: dict[str, _Server] = {}
        self._guard = threading.Lock()

    def serves(self, language: str) -> bool:
        return language in SERVED

    def run(
        self,
        language: str,
        cwd: Path,
        env: Mapping[str, str],
        output: int,
        timeout: float | None = None,
    ) -> int:
        """Run the language's runner in `cwd` with exactly `env`, stdout and stderr to `output`; its exit
        code, or TIMED_OUT. ServerGone when the server could not start the run (the caller may spawn it: it
        never began); a server that dies once the run began gives LOST, never a second start."""
        with self._guard:
            server = self._servers.get(language)
            if server is not None and server.process.poll() is not None:
                server.close()  # it died (killed, or the run that killed it): a new one takes over
                server = None
            if server is None:
                server = self._servers[language] = _Server(language)
        try:
            return server.run(cwd, env, output, timeout)
        except ServerGone:
            with self._guard:
                if self._servers.get(language) is server:
                    del self._servers[language]
            server.close()
            raise

    def close(self) -> None:
        with self._guard:
            servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.close()

    def __enter__(self) -> ForkServers:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

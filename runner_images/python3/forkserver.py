"""kubemill's Python fork server: a warm interpreter that starts each run as a fresh forked process.

`python3 forkserver.py FD` serves requests on the Unix socket inherited as file descriptor FD (the host side
is kubemill.runners.forkserver). The server imports the runner (run.py, which imports `wmill`) once and never
reads any run's inputs itself. Per request (one JSON line: the run's working directory and its complete
environment, plus the file descriptor its output goes to, passed with SCM_RIGHTS) it forks a child that starts
a new session, takes that environment and directory, and runs run.py's `main` exactly as `python3 run.py`
would: a fresh process whose only inputs are that run's files. The server answers `{"pid": N}` at once and
`{"pid": N, "exit": code, "timedOut": bool}` when the child ends; it kills the run's process group when the
request's `timeout` (seconds) passes, or when the host sends `k` or closes the connection mid-run. It
serves one run at a time and exits when the host closes the socket. With `--listen PATH` (a pool's runner
container, docs/pools.md) it serves connections on a Unix socket instead, and, as the container's first
process, ends whatever a run left running before the next one starts.
"""

import contextlib
import json
import os
import select
import signal
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# What every run imports, imported once here so children start warm (none of it reads a run's inputs).
import traceback  # noqa: E402, F401
import types  # noqa: E402, F401

import run  # noqa: E402
import wmill  # noqa: E402, F401

_BASE_ENV = dict(os.environ)


def _read_exactly(server: socket.socket, size: int, data: bytes = b"") -> bytes:
    while len(data) < size:
        chunk = server.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _receive(server: socket.socket) -> tuple[dict, int]:
    """One request: an 8-byte length, the JSON body, and the output descriptor sent with the first bytes."""
    head, fds, _, _ = socket.recv_fds(server, 8, 1)
    if not head:
        raise EOFError
    size = int.from_bytes(_read_exactly(server, 8, head), "big")
    request = json.loads(_read_exactly(server, size))
    return request, fds[0] if fds else os.open(os.devnull, os.O_WRONLY)


def _child(request: dict, output: int, server: socket.socket) -> None:
    """In the forked child: become the run's own process, then run it. Never returns."""
    code = 70
    try:
        server.close()
        os.setsid()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(null)
        os.close(output)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(_BASE_ENV)  # the container's own (PATH, HOME), under what the run is given
        os.environ.update(request["env"])
        sys.argv = [os.path.join(HERE, "run.py")]
        code = run.main()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException as exc:  # the wrapper handles the script's errors; this is the wrapper failing
        with contextlib.suppress(OSError):
            os.write(2, f"kubemill fork server: the run failed to start: {exc!r}\n".encode())
    os._exit(code)


def serve(server: socket.socket) -> None:
    while True:
        try:
            request, output = _receive(server)
        except (EOFError, OSError):
            return
        _state["busy"] = True
        pid = os.fork()
        if pid == 0:
            _child(request, output, server)
        os.close(output)
        server.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        timed_out = _wait(pid, server, request.get("timeout"))
        _, status = os.waitpid(pid, 0)
        exit_code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # nothing of the run's process group outlives it
        _sweep()
        reply = {"pid": pid, "exit": exit_code, "timedOut": timed_out}
        with contextlib.suppress(OSError):
            server.sendall(json.dumps(reply).encode() + b"\n")
        _state["busy"] = False
        if _state["stopping"]:
            sys.exit(0)


def _wait(pid: int, server: socket.socket, timeout: float | None) -> bool:
    """Until the child ends; its process group is killed on the timeout, or when the host says `k` (or goes
    away). True when the timeout ended it."""
    pidfd = os.pidfd_open(pid)
    deadline = None if timeout is None else time.monotonic() + timeout
    killed = timed_out = False
    try:
        while True:
            left = None if deadline is None or killed else max(deadline - time.monotonic(), 0.0)
            watched = [pidfd] if killed else [pidfd, server]
            ready, _, _ = select.select(watched, [], [], left)
            if pidfd in ready:
                return timed_out
            if not ready:
                timed_out = True
            elif server.recv(1) not in (b"k", b""):
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            killed = True
    finally:
        os.close(pidfd)


def _sweep() -> None:
    """As a container's first process (a pool's runner container), end every process a run left behind:
    nothing of one run lives on to see the next one's files. (Never elsewhere: outside a container of its
    own, -1 would mean every process of this user.)"""
    if os.getpid() == 1:
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass


_state = {"busy": False, "stopping": False}


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (the pod is going away): at once when idle, else once the run under way has ended (the agent
    finishes and reports it within the pod's grace period)."""
    if not _state["busy"]:
        sys.exit(0)
    _state["stopping"] = True


def listen(path: str) -> None:
    """A pool's runner container: serve the worker agent's connections on the Unix socket `path`, one at a
    time (the agent reconnects if it restarts)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(1)
    signal.signal(signal.SIGTERM, _terminate)
    while True:
        connection, _ = listener.accept()
        with connection:
            serve(connection)
        _sweep()


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the host ends the server by closing the socket
    if sys.argv[1] == "--listen":
        listen(sys.argv[2])
        return 0
    server = socket.socket(fileno=int(sys.argv[1]))
    serve(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The CPU backend's worker pipe protocol: worker processes that each own an EnvGroup over shared memory.

Workers are plain `python -m nil.sim._worker` processes (not multiprocessing children) so that they
never re-import the parent's __main__ and never inherit its threads or GL state. Protocol over the
worker's stdin/stdout: a length-prefixed pickle of the start arguments, then one-byte commands (s = step,
r = reset, x = reseed from the seed_in buffer, q = quit); each answered by b"k" or b"e" + length-prefixed
error text. All data (actions, flags, outputs, frames) travels through the shared-memory buffers, never
the pipe. Workers ignore SIGINT (the parent handles Ctrl-C and closes them) and exit when the pipe
closes; a dead, failing or silent worker raises SimulationError in the parent instead of hanging.
This module imports no torch.
"""

from __future__ import annotations

import mmap
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
import traceback
import weakref
from typing import Any

CMD_STEP, CMD_RESET, CMD_SEED, CMD_QUIT = b"s", b"r", b"x", b"q"
REPLY_OK, REPLY_ERR = b"k", b"e"
_WHAT = {CMD_STEP: "step", CMD_RESET: "reset", CMD_SEED: "seed"}

# Seconds to wait for a worker before declaring it hung (start-up compiles meshes and makes a GL context).
START_TIMEOUT = 300.0
STEP_TIMEOUT = 300.0


def open_shared(path: str, size: int) -> mmap.mmap:
    """Map a shared-memory file (created by the parent) into this process."""
    fd = os.open(path, os.O_RDWR)
    try:
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def read_exact(fd: int, n: int) -> bytes:
    """Read exactly n bytes from a file descriptor (EOFError when it closes first)."""
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            raise EOFError("pipe closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def write_all(fd: int, data: bytes) -> None:
    """Write all of data to a file descriptor."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# ---------------------------------------------------------------------------------- parent side
def _fd(stream: Any) -> int:
    """File descriptor of a worker's pipe (Popen was given PIPE for both)."""
    assert stream is not None
    return int(stream.fileno())


def _shutdown(procs: list, shm_path: str | None) -> None:
    """Stop workers (quit command, then terminate/kill) and remove the shared-memory file; idempotent."""
    for p in procs:
        try:
            p.stdin.write(CMD_QUIT)
            p.stdin.flush()
        except Exception:
            pass
    for p in procs:
        for stop in (None, p.terminate, p.kill):
            if stop is not None:
                try:
                    stop()
                except Exception:
                    pass
            try:
                p.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        for f in (p.stdin, p.stdout):
            try:
                f.close()
            except Exception:
                pass
    if shm_path:
        try:
            os.unlink(shm_path)
        except FileNotFoundError:
            pass


class WorkerPool:
    """Worker processes for env slices of one shared-memory batch; commands go out, replies come back."""

    def __init__(
        self, owner: object, shm_path: str, slices: list[tuple[int, int]], args: dict[str, Any]
    ) -> None:
        self.procs: list[subprocess.Popen] = []
        self.slices = slices
        self._pending: list[int] = []
        self._pending_what = ""
        # the finalizer stops the workers when the owner is collected without close()
        self._finalizer = weakref.finalize(owner, _shutdown, self.procs, shm_path)
        # the worker must import this very copy of nil (e.g. a source tree put on sys.path at run time)
        import nil

        env = dict(os.environ)
        src = os.path.dirname(os.path.dirname(os.path.abspath(nil.__file__)))
        env["PYTHONPATH"] = os.pathsep.join([src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        try:
            for start, stop in slices:
                p = subprocess.Popen(
                    [sys.executable, "-m", "nil.sim._worker"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    bufsize=0,
                    close_fds=True,
                    env=env,
                )
                self.procs.append(p)
                blob = pickle.dumps({**args, "shm_path": shm_path, "start": start, "stop": stop})
                write_all(_fd(p.stdin), struct.pack("<I", len(blob)) + blob)
            self._pending, self._pending_what = list(range(len(self.procs))), "start"
            self.wait(START_TIMEOUT)
        except BaseException:
            self.close()
            raise

    @property
    def busy(self) -> bool:
        """A command is out and its replies are not collected yet."""
        return bool(self._pending)

    def send(self, cmd: bytes, which: list[int] | None = None) -> None:
        """Send `cmd` to workers `which` (all when None) without waiting; collect with wait()."""
        from nil.errors import SimulationError

        ks = list(range(len(self.procs))) if which is None else which
        for k in ks:
            try:
                write_all(_fd(self.procs[k].stdin), cmd)
            except OSError:
                raise SimulationError(
                    f"simulator worker {k} is gone (exit code {self.procs[k].poll()}); create a new simulator"
                ) from None
        self._pending, self._pending_what = ks, _WHAT.get(cmd, "command")

    def wait(self, timeout: float = STEP_TIMEOUT) -> None:
        """Collect one reply per worker the last command went to; a dead, failing or silent one raises."""
        from nil.errors import SimulationError

        what = self._pending_what
        pending = {_fd(self.procs[k].stdout): k for k in self._pending}
        self._pending = []
        errors: list[str] = []
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            ready, _, _ = select.select(list(pending), [], [], max(0.0, left))
            if not ready:
                raise SimulationError(
                    f"simulator workers {sorted(pending.values())} did not answer '{what}' within "
                    f"{timeout:.0f} s; the machine may be overloaded: lower sim.num_envs/num_workers"
                )
            for fd in ready:
                k = pending.pop(fd)
                try:
                    reply = read_exact(fd, 1)
                    if reply == REPLY_ERR:
                        (n,) = struct.unpack("<I", read_exact(fd, 4))
                        errors.append(
                            f"worker {k}: " + read_exact(fd, n).decode(errors="replace").splitlines()[0]
                        )
                    elif reply != REPLY_OK:
                        errors.append(f"worker {k}: protocol error ({reply!r})")
                except EOFError:
                    p = self.procs[k]
                    code = p.wait(timeout=5) if p.poll() is None else p.poll()
                    errors.append(f"worker {k} died (exit code {code})")
        if errors:
            raise SimulationError(
                f"simulator {what} failed: {'; '.join(errors)} (run with sim.num_workers=0 to debug "
                "in-process)"
            )

    def close(self) -> None:
        """Stop every worker and remove the shared-memory file (idempotent)."""
        self._pending = []
        self._finalizer()


# ---------------------------------------------------------------------------------- worker side
def _reply_error(fd: int, e: BaseException) -> None:
    msg = f"{type(e).__name__}: {e}\n{traceback.format_exc()}".encode(errors="replace")
    try:
        write_all(fd, REPLY_ERR + struct.pack("<I", len(msg)) + msg)
    except OSError:
        pass


def worker_main() -> None:
    """Worker process: own envs [start, stop) of a batch and answer commands until quit or EOF."""
    # Ctrl-C goes to the whole process group: the parent handles it and shuts us down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cmd_in = sys.stdin.fileno()
    reply_out = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt the protocol
    group = None
    try:
        (n,) = struct.unpack("<I", read_exact(cmd_in, 4))
        args = pickle.loads(read_exact(cmd_in, n))
        if args.get("lp_threads"):
            os.environ.setdefault("LP_NUM_THREADS", str(args["lp_threads"]))
        from nil.sim.mujoco_envs import EnvGroup, layout_size, map_buffers

        dims = args["dims"]
        size, _ = layout_size(dims)
        mm = open_shared(args["shm_path"], size)
        bufs = map_buffers(mm, dims)
        group = EnvGroup(
            args["spec"],
            bufs,
            args["start"],
            args["stop"],
            seed=args["seed"],
            reset_noise=args["reset_noise"],
        )
        write_all(reply_out, REPLY_OK)
    except BaseException as e:
        _reply_error(reply_out, e)
        return
    try:
        while True:
            try:
                cmd = read_exact(cmd_in, 1)
            except (EOFError, OSError):
                break  # parent gone
            if cmd == CMD_QUIT:
                break
            try:
                if cmd == CMD_STEP:
                    group.step()
                elif cmd == CMD_RESET:
                    group.reset(bufs["reset_in"])
                elif cmd == CMD_SEED:
                    group.reseed(int(bufs["seed_in"][0]))
                else:
                    raise ValueError(f"unknown command {cmd!r}")
            except Exception as e:
                _reply_error(reply_out, e)
                continue
            write_all(reply_out, REPLY_OK)
    finally:
        group.close()

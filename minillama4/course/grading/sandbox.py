"""Where the learner's code runs: a worker process that loads your exercise file fresh and calls your function on
each case, with a time limit, a memory cap and its own output. Nothing the learner's code does can reach the grader.

    grader (kernel, CLI, pytest)                 worker server (started once)            child (one per exercise)
    ─────────────────────────────                ────────────────────────────            ────────────────────────
    builds cases + expected values  ── job ──►   fork ─────────────────────────────►     load your file, call your
    (expected never leave it)                    wait ≤ time limit, kill if over          function on each case
    compares, diagnoses             ◄─ reply ─   exit status + raw frames ◄── pipe ───   outputs as plain data

* The server imports torch once, so each check costs a fork (milliseconds), not a new Python.
* The child writes one frame per case as it finishes, so a hang or a crash is pinned to its case.
* Frames hold only plain data (tuples, lists, dicts, numbers, strings, bytes): tensors travel as (dtype, shape,
  bytes), and the grader reads them with an unpickler that refuses every class, so a forged frame can only forge
  outputs, which are then compared like any other.
"""

from __future__ import annotations

import io
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

TIMEOUT_S = float(os.environ.get("MINILLAMA4_GRADER_TIMEOUT", 30))  # per exercise: loading the file + every case
MEMORY_GB = float(os.environ.get("MINILLAMA4_GRADER_MEMORY_GB", 4))  # address space the learner's code may add
MAX_FRAME = 256 << 20  # bytes: a larger output is refused, not read
PRINT_LIMIT = 64 << 20  # bytes the learner's code may print


# ------------------------------------------------------------------------------------------ framing
def _send(fd: int, payload: bytes) -> None:
    data = struct.pack("<Q", len(payload)) + payload
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _recv_exact(fd: int, n: int, deadline: float | None) -> bytes | None:
    chunks, left = [], n
    while left:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None  # the other side closed
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _recv(fd: int, deadline: float | None = None) -> bytes | None:
    head = _recv_exact(fd, 8, deadline)
    if head is None:
        return None
    (n,) = struct.unpack("<Q", head)
    if n > MAX_FRAME:
        raise ValueError(f"a frame of {n} bytes is over the limit of {MAX_FRAME}")
    return _recv_exact(fd, n, deadline)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):  # plain data only: no class, no function, nothing that runs code
        raise pickle.UnpicklingError(f"refused {module}.{name}")


def plain_loads(data: bytes):
    return _PlainUnpickler(io.BytesIO(data)).load()


# ------------------------------------------------------------------------------------------ outputs as plain data
def encode(x, depth: int = 0):
    """An output as plain data: tensors → ("tensor", dtype, shape, bytes); anything unknown → ("object", type, repr)."""
    import torch

    if depth > 20:
        return ("object", "nesting deeper than 20 levels", "")
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_sparse or t.device.type == "meta":
            return ("object", f"{t.layout} tensor on {t.device}", "")
        t = t.cpu().contiguous().as_subclass(torch.Tensor)
        return ("tensor", str(t.dtype).removeprefix("torch."), tuple(t.shape), t.reshape(-1).view(torch.uint8)
                .numpy().tobytes())
    if x is None or isinstance(x, (bool, int, float, str, bytes)):
        return ("value", x if type(x) in (bool, int, float, str, bytes, type(None)) else _plain_scalar(x))
    if isinstance(x, (list, tuple)):
        kind = "list" if isinstance(x, list) else "tuple"
        return (kind, [encode(v, depth + 1) for v in x])
    if isinstance(x, dict):
        return ("dict", [(encode(k, depth + 1), encode(v, depth + 1)) for k, v in x.items()])
    return ("object", f"{type(x).__module__}.{type(x).__qualname__}", repr(x)[:200])


def _plain_scalar(x):
    for t in (bool, int, float, str, bytes):
        if isinstance(x, t):
            return t(x)


class Foreign:
    """An output the grader cannot compare (a numpy array, a custom object …): named in the verdict."""

    def __init__(self, type_name: str, text: str):
        self.type_name, self.text = type_name, text

    def __repr__(self):
        return f"<{self.type_name}: {self.text}>"


def decode(x):
    import torch

    kind = x[0]
    if kind == "tensor":
        _, dtype, shape, data = x
        dt = getattr(torch, dtype)
        if not data:
            return torch.empty(shape, dtype=dt)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dt).reshape(shape)
    if kind == "value":
        return x[1]
    if kind == "list":
        return [decode(v) for v in x[1]]
    if kind == "tuple":
        return tuple(decode(v) for v in x[1])
    if kind == "dict":
        return {decode(k): decode(v) for k, v in x[1]}
    return Foreign(x[1], x[2])


# ------------------------------------------------------------------------------------------ the child: your code
def _learner_frames(tb, path: str) -> list[tuple[int, str]]:
    """(line, code) of the traceback frames inside the learner's file: where in their code it broke."""
    return [(f.lineno, (f.line or "").strip()) for f in traceback.extract_tb(tb) if f.filename == path]


def _die_with_parent(parent: int) -> None:
    """If the server dies (the grader stopped it: Ctrl-C, a closed notebook), this child is killed too (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the server died before the line above ran
        os._exit(4)


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _child(job: dict, out_fd: int, server_fds: tuple[int, ...]) -> None:
    """Runs in the forked child. Never returns."""
    code = 0
    try:
        for fd in server_fds:  # the server's pipes to the grader: the learner's code must not reach them
            os.close(fd)
        os.setpgid(0, 0)  # its own process group: the server can kill it and anything it started
        _die_with_parent(job["server_pid"])
        try:
            cap = _address_space() + int(job["memory_gb"] * (1 << 30))
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        except (OSError, ValueError):
            pass  # no /proc or no RLIMIT_AS on this platform: the time limit still holds
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (PRINT_LIMIT, PRINT_LIMIT))  # printing more: SIGXFSZ
        log = os.open(job["log"], os.O_WRONLY)
        os.dup2(log, 1)
        os.dup2(log, 2)
        sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), write_through=True)
        sys.stderr = sys.stdout
        path = job["path"]
        forbidden = job.get("forbidden")  # solutions/ when grading exercises/

        def audit(event, args):
            if forbidden and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
                p = os.fsdecode(args[0])
                if os.path.abspath(p).startswith(forbidden):
                    _send(out_fd, pickle.dumps(("forbidden", p)))

        sys.addaudithook(audit)
        _run_cases(job, path, out_fd)
    except BaseException:  # anything that escapes is reported, never raised into the server's loop
        code = 3
        try:
            _send(out_fd, pickle.dumps(("internal", traceback.format_exc()[-2000:])))
        except BaseException:
            pass
    finally:
        try:
            sys.stdout.flush()
        except BaseException:
            pass
        os._exit(code)


def _run_cases(job: dict, path: str, out_fd: int) -> None:
    import importlib
    import importlib.util

    def report(*frame):
        _send(out_fd, pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL))

    def failure(kind, i, exc):
        frames = _learner_frames(exc.__traceback__, path)
        report(kind, i, type(exc).__name__, str(exc)[:1000], frames)

    try:
        spec = importlib.util.spec_from_file_location(f"_graded_{Path(path).stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    except SystemExit as exc:
        return report("exit", -1, repr(exc.code), _learner_frames(exc.__traceback__, path))
    except NotImplementedError:
        return report("todo", -1)
    except BaseException as exc:
        return failure("raised", -1, exc)
    fn = getattr(module, job["function"], None)
    if not callable(fn):
        return report("missing", -1)
    code = getattr(fn, "__code__", None)
    report("loaded", code.co_filename if code else path, code.co_firstlineno if code else 0)
    probe = None
    if job["probe"]:
        mod, qual = job["probe"]
        probe = getattr(importlib.import_module(mod), qual)
    cases = pickle.loads(job["cases"])
    for i, (args, kwargs) in enumerate(cases):
        try:
            out = probe(fn, *args, **kwargs) if probe else fn(*args, **kwargs)
            report("case", i, encode(out))
        except NotImplementedError as exc:
            tb = traceback.extract_tb(exc.__traceback__)
            if not tb or tb[-1].filename != path:  # raised by package code, not by a stub of the learner's file
                return failure("raised", i, exc)
            # a stub of this file: the graded function itself, or another exercise it calls (not written yet)
            return report("todo", i, "" if tb[-1].name == job["function"] else tb[-1].name)
        except SystemExit as exc:
            return report("exit", i, repr(exc.code), _learner_frames(exc.__traceback__, path))
        except MemoryError as exc:
            return failure("memory", i, exc)
        except BaseException as exc:
            kind = "memory" if "can't allocate memory" in str(exc) or "out of memory" in str(exc) else "raised"
            return failure(kind, i, exc)
    _send(out_fd, _DONE)


# ------------------------------------------------------------------------------------------ the server
_DONE = pickle.dumps(("done",), protocol=pickle.HIGHEST_PROTOCOL)


def _kill_group(pid: int) -> None:
    for target in (-pid, pid):
        try:
            os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

def _run_job(job: dict, server_fds: tuple[int, ...]) -> dict:
    """Fork a child for one exercise, collect its frames within the time limit, and say how it ended."""
    r, w = os.pipe()
    log = tempfile.NamedTemporaryFile(prefix="minillama4-grade-", delete=False)
    log.close()
    job = {**job, "log": log.name, "server_pid": os.getpid()}
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(job, w, server_fds)
    os.close(w)
    frames, timed_out, too_big = [], False, False
    deadline = t0 + job["timeout"]
    try:
        while True:
            frame = _recv(r, deadline)
            if frame is None:
                break
            frames.append(frame)
            if frame == _DONE:  # not waiting for EOF: a process the learner's code left behind may hold the pipe
                break
    except TimeoutError:
        timed_out = True
    except ValueError:
        too_big = True
    finally:
        os.close(r)
    if timed_out or too_big:
        _kill_group(pid)
    _, status = os.waitpid(pid, 0)
    try:  # anything the learner's code started and left running (the child itself is reaped)
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    with open(log.name, "rb") as f:
        printed = f.read(20000)
    os.unlink(log.name)
    return {"frames": frames, "timed_out": timed_out, "too_big": too_big, "seconds": time.monotonic() - t0,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0,
            "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "printed": printed.decode("utf-8", "replace")}


def serve(req_fd: int, resp_fd: int) -> None:
    """The server loop: one job in, one reply out, until the grader closes the pipe."""
    import torch

    import minillama4  # noqa: F401  (the package is imported once here, so every child starts with it)
    import minillama4.course.grading  # noqa: F401

    torch.set_num_threads(1)  # small cases; and a forked child must not inherit a busy thread pool
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the notebook is the grader's to handle
    _send(resp_fd, pickle.dumps("ready"))
    while True:
        raw = _recv(req_fd)
        if raw is None:
            return
        _send(resp_fd, pickle.dumps(_run_job(pickle.loads(raw), (req_fd, resp_fd))))


# ------------------------------------------------------------------------------------------ the grader's side
class Worker:
    """The grader's handle on the worker server: started on first use, restarted if it dies or is interrupted."""

    def __init__(self):
        self.proc = None

    def start(self) -> None:
        req_r, self.req_w = os.pipe()
        self.resp_r, resp_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"from minillama4.course.grading.sandbox import serve; serve({req_r}, {resp_w})"],
            pass_fds=(req_r, resp_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": _pythonpath()})
        os.close(req_r)
        os.close(resp_w)
        self.ready = False

    def _wait_ready(self) -> None:
        if not self.ready:
            if _recv(self.resp_r, time.monotonic() + 300) is None:
                raise RuntimeError("the grader's worker did not start (see `python -c 'import minillama4'`)")
            self.ready = True

    def run(self, job: dict) -> dict:
        """Send one job and wait for its reply. Ctrl-C stops the worker (and the learner's code) at once."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        try:
            self._wait_ready()
            _send(self.req_w, pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
            raw = _recv(self.resp_r, time.monotonic() + job["timeout"] + 60)
        except BaseException:
            self.stop()
            raise
        if raw is None:
            self.stop()
            raise RuntimeError("the grader's worker stopped unexpectedly")
        return plain_loads(raw)  # plain data: a dict of numbers, strings and the child's frames as bytes

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
            for fd in (self.req_w, self.resp_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.proc = None


def _pythonpath() -> str:
    """The worker must import this very copy of the package, wherever it came from."""
    pkg_parent = str(Path(__file__).resolve().parents[3])
    rest = os.environ.get("PYTHONPATH", "")
    return pkg_parent + (os.pathsep + rest if rest else "")


_WORKER = Worker()


def worker() -> Worker:
    return _WORKER

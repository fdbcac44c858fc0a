"""``python -m gpuops train``: short deterministic runs, resume, Ctrl-C, checkpoints that are
never overwritten by another run nor left half-written, MNIST IDX files, bad input, and the
full default run's accuracy."""
from __future__ import annotations

import errno
import gzip
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy
import pytest

import gpuops
from gpuops import datasets, train
from gpuops.cli import main

ROOT = Path(__file__).resolve().parents[2]
NEEDED = ("linear", "relu", "softmax_cross_entropy")

pytestmark = pytest.mark.skipif(
    any(op not in gpuops.OPERATORS for op in NEEDED),
    reason=f"training needs {', '.join(NEEDED)}")


def _train(out: Path, *options: str) -> dict:
    code = main(["train", "--out", str(out), "--quiet", "--backend", "numpy", *options])
    assert code == 0
    return json.loads((out / "metrics.json").read_text())


def _losses(metrics: dict) -> list:
    return [(h["train_loss"], h["train_accuracy"], h["test_accuracy"]) for h in metrics["history"]]


def test_short_run_writes_outputs_and_is_deterministic(tmp_path):
    first = _train(tmp_path / "a", "--limit", "240", "--epochs", "3", "--seed", "5")
    second = _train(tmp_path / "b", "--limit", "240", "--epochs", "3", "--seed", "5")
    assert _losses(first) == _losses(second)  # bit-for-bit the same numbers
    other = _train(tmp_path / "c", "--limit", "240", "--epochs", "3", "--seed", "6")
    assert _losses(other) != _losses(first)
    assert first["config"]["optimizer"] == "adam" and first["backend"] == "numpy"
    assert first["train_images"] == 240 and first["test_images"] == 60
    history = first["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    pytest.importorskip("matplotlib")
    assert (tmp_path / "a" / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_continues_exactly(tmp_path):
    straight = _train(tmp_path / "straight", "--limit", "160", "--epochs", "3")
    _train(tmp_path / "resumed", "--limit", "160", "--epochs", "2")
    resumed = _train(tmp_path / "resumed", "--limit", "160", "--epochs", "3", "--resume")
    assert _losses(resumed) == _losses(straight)
    with numpy.load(tmp_path / "straight" / "checkpoint.npz") as a, \
            numpy.load(tmp_path / "resumed" / "checkpoint.npz") as b:
        for key in a.files:
            if key.startswith(("model/", "optim/")):
                numpy.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("options", [("--optimizer", "sgd"), ("--optimizer", "adamw", "--lr", "3e-3"),
                                     ("--model", "cnn")])
def test_other_optimizers_and_the_cnn(tmp_path, options):
    if "cnn" in options:
        missing = [op for op in ("conv2d", "max_pool2d", "lrn") if op not in gpuops.OPERATORS]
        if missing:
            pytest.skip(f"the CNN needs {', '.join(missing)}")
    metrics = _train(tmp_path, "--limit", "200", "--epochs", "2", *options)
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]
    assert metrics["history"][-1]["test_accuracy"] > 0.3


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_runs(tmp_path, monkeypatch, dtype):
    """--dtype: float32 weights, the linears under autocast in the 16-bit dtype, a GradScaler
    for float16 only; the accuracy of a short run close to float32's."""
    linear_inputs, scalers = [], []
    cast_inputs = gpuops.amp.cast_inputs

    def spy(name, inputs):
        cast = cast_inputs(name, inputs)
        if name == "linear":
            linear_inputs.append(cast[0].dtype)
        return cast

    class Scaler(gpuops.amp.GradScaler):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            scalers.append(self)

    monkeypatch.setattr(gpuops.amp, "cast_inputs", spy)
    monkeypatch.setattr(train, "GradScaler", Scaler)
    metrics = _train(tmp_path / dtype, "--limit", "200", "--epochs", "3", "--dtype", dtype)
    assert metrics["config"]["dtype"] == dtype
    assert set(linear_inputs) == {numpy.dtype(dtype)}
    assert [s.is_enabled() for s in scalers] == [dtype == "float16"]
    with numpy.load(tmp_path / dtype / "checkpoint.npz") as f:
        assert {f[k].dtype for k in f.files if k.startswith("model/")} == {numpy.dtype("float32")}
    reference = _train(tmp_path / "float32", "--limit", "200", "--epochs", "3")
    assert abs(metrics["final_test_accuracy"] - reference["final_test_accuracy"]) <= 0.1
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]


def test_float16_resume_continues_exactly(tmp_path):
    """The GradScaler's state is in the checkpoint: a resumed float16 run is the straight one."""
    options = ("--limit", "160", "--dtype", "float16")
    straight = _train(tmp_path / "straight", *options, "--epochs", "3")
    _train(tmp_path / "resumed", *options, "--epochs", "2")
    resumed = _train(tmp_path / "resumed", *options, "--epochs", "3", "--resume")
    assert _losses(resumed) == _losses(straight)
    with numpy.load(tmp_path / "resumed" / "checkpoint.npz") as f:
        assert float(f["scaler/scale"]) > 0 and "scaler/_growth_tracker" in f.files


def test_summary_says_1_epoch_not_1_epochs(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path), "--backend", "numpy", "--limit", "40",
                 "--epochs", "1"]) == 0
    assert " after 1 epoch, " in capsys.readouterr().out


def test_default_out_folder_is_git_ignored(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--quiet", "--backend", "numpy", "--limit", "40", "--epochs", "1"]) == 0
    (written,) = tmp_path.iterdir()
    assert (written / "checkpoint.npz").is_file()
    assert f"{written.name}/" in (ROOT / ".gitignore").read_text().splitlines()


def test_checkpoint_of_other_settings_is_not_overwritten(tmp_path, capsys):
    _train(tmp_path, "--limit", "40", "--epochs", "1")
    checkpoint = (tmp_path / "checkpoint.npz").read_bytes()
    options = ["train", "--out", str(tmp_path), "--quiet", "--backend", "numpy", "--limit", "40"]
    for other, message in ((["--optimizer", "sgd", "--epochs", "1"], "optimizer='adam'"),
                           (["--epochs", "2"], "pass --resume to continue it")):
        assert main([*options, *other]) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and f"--out {tmp_path} holds the checkpoint" in lines[0]
        assert message in lines[0] and "another --out" in lines[0], lines
        assert (tmp_path / "checkpoint.npz").read_bytes() == checkpoint
    assert main([*options, "--epochs", "1"]) == 0  # the same settings: a rerun may overwrite
    assert main([*options, "--epochs", "2", "--resume"]) == 0


def test_checkpoint_that_is_not_one_is_not_overwritten(tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes(b"my own file")
    result = _cli("--out", str(tmp_path), "--limit", "40", "--epochs", "1", cwd=tmp_path)
    assert result.returncode == 1 and "not overwriting it" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (tmp_path / "checkpoint.npz").read_bytes() == b"my own file"


def test_ctrl_c_prints_the_checkpoint_and_the_resume_command(tmp_path, monkeypatch, capsys):
    straight = _train(tmp_path / "straight", "--limit", "160", "--epochs", "3")
    accuracy, calls = train._accuracy, []

    def interrupt_in_epoch_2(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return accuracy(*args)

    monkeypatch.setattr(train, "_accuracy", interrupt_in_epoch_2)
    out = tmp_path / "a b"
    assert main(["train", "--out", str(out), "--quiet", "--backend", "numpy", "--limit", "160",
                 "--epochs", "3"]) == 130
    first, command = capsys.readouterr().err.strip().splitlines()
    assert first == ("python -m gpuops train: interrupted; the last checkpoint is "
                     f"{out / 'checkpoint.npz'} (epoch 1 of 3)")
    assert command == "continue with: " + shlex.join(
        ["python", "-m", "gpuops", "train", "--epochs", "3", "--backend", "numpy",
         "--out", str(out), "--limit", "160", "--quiet", "--resume"])
    monkeypatch.undo()
    assert main(shlex.split(command.removeprefix("continue with: "))[3:]) == 0
    resumed = json.loads((out / "metrics.json").read_text())
    assert _losses(resumed) == _losses(straight)


def test_ctrl_c_before_the_first_checkpoint(tmp_path, monkeypatch, capsys):
    def interrupt(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "_accuracy", interrupt)
    assert main(["train", "--out", str(tmp_path), "--quiet", "--backend", "numpy",
                 "--limit", "40", "--epochs", "1"]) == 130
    assert capsys.readouterr().err == ("python -m gpuops train: interrupted before the first "
                                       "checkpoint was written\n")


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
                                     KeyboardInterrupt()], ids=["disk-full", "ctrl-c"])
def test_failed_checkpoint_write_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys,
                                                           failure):
    _train(tmp_path, "--limit", "40", "--epochs", "1")
    checkpoint = (tmp_path / "checkpoint.npz").read_bytes()

    def write_half_and_fail(file, **_arrays):
        Path(file).write_bytes(checkpoint[:len(checkpoint) // 2])
        raise failure

    monkeypatch.setattr(train.numpy, "savez", write_half_and_fail)
    code = main(["train", "--out", str(tmp_path), "--quiet", "--backend", "numpy",
                 "--limit", "40", "--epochs", "2", "--resume"])
    lines = capsys.readouterr().err.strip().splitlines()
    if isinstance(failure, OSError):
        assert code == 1 and len(lines) == 1, lines
        assert lines[0] == (f"python -m gpuops train: error: cannot write "
                            f"{tmp_path / 'checkpoint.npz'}: No space left on device")
    else:
        assert code == 130 and "(epoch 1 of 2)" in lines[0]
    assert (tmp_path / "checkpoint.npz").read_bytes() == checkpoint
    assert [p.name for p in tmp_path.iterdir() if "tmp" in p.name] == []


def test_full_default_run_reaches_97_percent(tmp_path):
    """The README's main job: the default MLP on the embedded digits (about 10-20 s on 2 cores)."""
    metrics = _train(tmp_path)
    assert metrics["config"]["epochs"] == 30
    assert metrics["final_test_accuracy"] >= 0.97


# ---- MNIST IDX files -------------------------------------------------------------------

def _idx(array: numpy.ndarray) -> bytes:
    code = {numpy.dtype(numpy.uint8): 0x08}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + numpy.array(array.shape, ">u4").tobytes()
    return header + array.tobytes()


def _write_mnist(folder: Path, n_train=40, n_test=12, size=(28, 28), gz=False, rng=None) -> None:
    rng = rng or numpy.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    parts = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, *size), numpy.uint8),
             "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(numpy.uint8),
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, *size), numpy.uint8),
             "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(numpy.uint8)}
    for name, array in parts.items():
        data = _idx(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_mnist_idx_files(tmp_path, gz):
    _write_mnist(tmp_path / "mnist", gz=gz)
    data = datasets.load_mnist(tmp_path / "mnist")
    assert data.train_x.shape == (40, 1, 28, 28) and data.test_y.shape == (12,)
    assert data.train_x.dtype == numpy.float32 and 0 <= data.train_x.min() <= data.train_x.max() <= 1
    metrics = _train(tmp_path / "out", "--data", "mnist", "--data-dir", str(tmp_path / "mnist"),
                     "--epochs", "1", "--batch-size", "16")
    assert metrics["train_images"] == 40 and len(metrics["history"]) == 1


def test_read_idx_round_trip(tmp_path):
    a = numpy.arange(24, dtype=numpy.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(_idx(a))
    numpy.testing.assert_array_equal(datasets.read_idx(tmp_path / "a"), a)


# ---- bad options and data: one line on stderr, non-zero exit, no traceback ------------------

def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "gpuops", "train", "--quiet", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)


def _bad_data(tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / "data"
    if kind == "corrupt-header":
        _write_mnist(folder)
        path = folder / "train-images-idx3-ubyte"
        path.write_bytes(b"\x12\x34" + path.read_bytes()[2:])
    elif kind == "truncated":
        _write_mnist(folder, gz=True)
        path = folder / "t10k-images-idx3-ubyte.gz"
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-5]))
    elif kind == "wrong-size":
        _write_mnist(folder, size=(20, 20))
    elif kind == "missing-file":
        _write_mnist(folder)
        (folder / "t10k-labels-idx1-ubyte").unlink()
    elif kind == "bad-gzip":
        _write_mnist(folder)
        (folder / "train-labels-idx1-ubyte").write_bytes(b"\x1f\x8b" + b"garbage" * 3)
    elif kind == "corrupt-deflate":  # a valid gzip header, then a deflate block of reserved type
        _write_mnist(folder, gz=True)
        path = folder / "t10k-images-idx3-ubyte.gz"
        path.write_bytes(path.read_bytes()[:10] + b"\xff" + path.read_bytes()[11:])
    elif kind == "cut-gzip":
        _write_mnist(folder, gz=True)
        path = folder / "t10k-images-idx3-ubyte.gz"
        path.write_bytes(path.read_bytes()[:-20])
    elif kind == "overflowing-dims":  # 2**22 * 2**21 * 2**21 == 2**64: 0 in int64 arithmetic
        _write_mnist(folder)
        (folder / "train-images-idx3-ubyte").write_bytes(
            bytes([0, 0, 8, 3]) + numpy.array([2**22, 2**21, 2**21], ">u4").tobytes())
    elif kind == "empty-test-set":
        _write_mnist(folder, n_test=0)
    elif kind == "empty-training-set":
        _write_mnist(folder, n_train=0)
    elif kind == "file":
        folder.write_bytes(b"")
    return folder


@pytest.mark.parametrize("kind,message", [
    ("missing-dir", "does not exist"),
    ("corrupt-header", "not an IDX file"),
    ("truncated", "IDX header says dims"),
    ("wrong-size", "expected (28, 28)"),
    ("missing-file", "missing t10k-labels-idx1-ubyte"),
    ("bad-gzip", "cannot read"),
    ("corrupt-deflate", "t10k-images-idx3-ubyte.gz: Error -3 while decompressing data"),
    ("cut-gzip", "t10k-images-idx3-ubyte.gz: Compressed file ended"),
    ("overflowing-dims",
     "train-images-idx3-ubyte: IDX header says dims (4194304, 2097152, 2097152)"),
    ("empty-test-set", "t10k-images-idx3-ubyte: no images"),
    ("empty-training-set", "train-images-idx3-ubyte: no images"),
    ("file", "is not a folder"),
])
def test_bad_data_is_a_one_line_error(tmp_path, kind, message):
    folder = tmp_path / "nowhere" if kind == "missing-dir" else _bad_data(tmp_path, kind)
    result = _cli("--data", "mnist", "--data-dir", str(folder), "--out", str(tmp_path / "o"),
                  cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.parametrize("args,message", [
    (("--epochs", "0"), "--epochs must be >= 1"),
    (("--epochs", "two"), "invalid int value"),
    (("--batch-size", "-3"), "--batch-size must be >= 1"),
    (("--lr", "0"), "--lr must be > 0"),
    (("--optimizer", "lbfgs"), "invalid choice"),
    (("--dtype", "float8"), "invalid choice"),
    (("--data", "mnist"), "needs --data-dir"),
    (("--data-dir", "x"), "only for --data mnist"),
    (("--resume",), "no checkpoint"),
])
def test_bad_options_are_one_line_errors(tmp_path, args, message):
    result = _cli("--out", str(tmp_path / "o"), *args, cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_out_naming_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "taken").write_text("")
    result = _cli("--out", str(tmp_path / "taken"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (f"python -m gpuops train: error: --out {tmp_path / 'taken'} is a "
                             "file, not a folder\n")


def test_cupy_backend_without_gpu_is_a_one_line_error(tmp_path):
    if gpuops.gpu_available():
        pytest.skip("a GPU is usable here")
    result = _cli("--backend", "cupy", "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert result.returncode == 1 and "no usable CUDA GPU" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_resume_from_a_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes(b"PK\x03\x04 not really a zip")
    result = _cli("--out", str(tmp_path), "--resume", cwd=tmp_path)
    assert result.returncode == 1 and "is not a gpuops checkpoint" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_resume_with_other_settings_is_refused(tmp_path):
    _train(tmp_path, "--limit", "40", "--epochs", "1")
    result = _cli("--out", str(tmp_path), "--limit", "40", "--epochs", "2", "--resume",
                  "--optimizer", "sgd", "--backend", "numpy", cwd=tmp_path)
    assert result.returncode == 1 and "optimizer='adam'" in result.stderr
    assert "Traceback" not in result.stderr


def test_memory_holds_steady_over_20_epochs(tmp_path, monkeypatch):
    """Traced host memory at the end of epoch 20 is within 512 KiB of epoch 3's."""
    import tracemalloc

    from gpuops import train
    seen = []
    save = train._save_checkpoint

    def save_and_measure(*args, **kwargs):
        save(*args, **kwargs)
        seen.append(tracemalloc.get_traced_memory()[0])

    monkeypatch.setattr(train, "_save_checkpoint", save_and_measure)
    tracemalloc.start()
    try:
        _train(tmp_path, "--limit", "64", "--epochs", "20", "--batch-size", "32")
    finally:
        tracemalloc.stop()
    assert len(seen) == 20
    growth = seen[-1] - seen[2]
    assert growth < 512 * 1024, f"traced memory grew {growth} bytes from epoch 3 to 20: {seen}"


# ---- --model gpt ----------------------------------------------------------------------------

GPT_TINY = ("--model", "gpt", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
            "--block-size", "16", "--batch-size", "4", "--limit", "6000", "--sample", "0")
GPT_NEEDED = ("embedding", "layer_norm", "attention", "gelu")


def _gpt_losses(metrics: dict) -> list:
    return [(h["step"], h["train_bpb"], h["val_bpb"], h["lr"]) for h in metrics["history"]]


@pytest.mark.skipif(any(op not in gpuops.OPERATORS for op in GPT_NEEDED),
                    reason=f"the gpt needs {', '.join(GPT_NEEDED)}")
def test_gpt_short_run_resumes_exactly(tmp_path, capsys, monkeypatch):
    straight = _train(tmp_path / "straight", *GPT_TINY, "--steps", "8", "--eval-interval", "4")
    assert [h["step"] for h in straight["history"]] == [4, 8]
    assert straight["config"]["optimizer"] == "adamw" and straight["train_bytes"] == 5400
    assert straight["val_bytes"] == 600 and straight["parameters"] == 256 * 16 + 16 * 16 + (
        4 * 16 + 3 * 16 * 16 + 3 * 16 + 16 * 16 + 16 + 4 * 16 * 16 + 4 * 16 + 4 * 16 * 16 + 16
    ) + 2 * 16
    baseline = datasets.unigram_bits(datasets.load_stdlib_text(limit=6000).train)
    assert straight["unigram_bpb"] == pytest.approx(baseline)
    assert 3 < baseline < 6 and straight["final_val_bpb"] < 8.5  # 8 bits: a uniform guess
    lrs = [h["lr"] for h in straight["history"]]
    assert 3e-4 < lrs[1] < lrs[0] < 3e-3  # cosine decay after a one-step warmup
    # Ctrl-C during the second evaluation: the checkpoint of step 4 stays; resume from it
    evaluate, calls = train._evaluate, []

    def interrupt_at_step_8(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(*args)

    monkeypatch.setattr(train, "_evaluate", interrupt_at_step_8)
    out = tmp_path / "resumed"
    assert main(["train", "--out", str(out), "--quiet", "--backend", "numpy", *GPT_TINY,
                 "--steps", "8", "--eval-interval", "4"]) == 130
    first, command = capsys.readouterr().err.strip().splitlines()
    assert first.endswith(f"{out / 'checkpoint.npz'} (step 4 of 8)")
    monkeypatch.undo()
    assert main(shlex.split(command.removeprefix("continue with: "))[3:]) == 0
    resumed = json.loads((out / "metrics.json").read_text())
    assert _gpt_losses(resumed) == _gpt_losses(straight)
    assert resumed["final_val_bpb"] == straight["final_val_bpb"]  # the whole validation text
    assert straight["final_val_bytes"] == 592  # 37 windows of 16 of its 600 bytes
    with numpy.load(tmp_path / "straight" / "checkpoint.npz") as a, \
            numpy.load(tmp_path / "resumed" / "checkpoint.npz") as b:
        for key in a.files:
            if key.startswith(("model/", "optim/")):
                numpy.testing.assert_array_equal(a[key], b[key])
    # the summary and the sample
    assert main(["train", "--out", str(tmp_path / "s"), "--backend", "numpy", *GPT_TINY[:-2],
                 "--steps", "2", "--sample", "30"]) == 0
    out = capsys.readouterr().out
    assert "bits/byte (training" in out and "unigram baseline" in out and "after 2 steps" in out
    metrics = json.loads((tmp_path / "s" / "metrics.json").read_text())
    prompt = datasets.load_stdlib_text(limit=6000).val[:32].tobytes().decode()
    assert metrics["sample"].startswith(prompt) and len(metrics["sample"]) > len(prompt)
    assert metrics["sample"] in out


def test_gpt_steps_never_read_the_device(tmp_path, monkeypatch):
    """The GPT loop keeps each step's loss on the device and reads the pending ones at once
    (every POSTFIX_EVERY steps for the progress bar, and at each evaluation): no step calls
    Tensor.item, and the training bits per byte are those of a per-step sum."""
    items, evaluating = [], []
    real_item, real_evaluate = gpuops.Tensor.item, train._evaluate

    def evaluate(*args):  # the validation loss is read per batch: not a training step
        evaluating.append(True)
        try:
            return real_evaluate(*args)
        finally:
            evaluating.pop()

    monkeypatch.setattr(gpuops.Tensor, "item",
                        lambda self: (None if evaluating else items.append(self))
                        or real_item(self))
    monkeypatch.setattr(train, "_evaluate", evaluate)
    reads = []
    real_add = train._add_in_order
    monkeypatch.setattr(train, "_add_in_order",
                        lambda total, losses: reads.append(len(losses)) or real_add(total, losses))
    run = _train(tmp_path / "g", *GPT_TINY, "--steps", "6", "--eval-interval", "3")
    assert items == [] and reads == [3, 3]  # quiet: read only at the two evaluations
    assert [h["step"] for h in run["history"]] == [3, 6]
    losses = [numpy.float32(0.5), numpy.float32(0.25), numpy.float32(1 / 3)]
    assert train._add_in_order(1.0, list(losses)) == 1.0 + 0.5 + 0.25 + float(losses[2])


def test_gpt_warmup_and_cosine_schedule():
    from gpuops.optim import AdamW
    optimizer = AdamW([gpuops.Tensor(numpy.zeros(1), requires_grad=True)], lr=1.0)
    scheduler = train._warmup_cosine(optimizer, 1000)
    used = []  # the learning rate of steps 1..1000
    for _ in range(1000):
        used.append(optimizer.lr)
        scheduler.step()
    # 100 warmup steps: lr (e + 1) / 100, the peak held at steps 99 and 100 (llm.c)
    assert used[0] == pytest.approx(0.01) and used[49] == pytest.approx(0.5)
    assert used[99] == pytest.approx(1.0) and used[100] == pytest.approx(1.0)
    assert used[550] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert used[-1] == pytest.approx(0.1, rel=1e-3) and min(used[100:]) > 0.0999


def test_stdlib_corpus_and_windows():
    corpus = datasets.load_stdlib_text()
    assert len(corpus.train) > 400_000 and len(corpus.val) == int(
        (len(corpus.train) + len(corpus.val)) * 0.1)
    assert corpus.train[:3].tobytes().isascii()
    rng = numpy.random.default_rng(0)
    x, y = datasets.random_windows(corpus.train, 5, 32, rng)
    assert x.shape == y.shape == (5, 32) and x.dtype == numpy.int64
    numpy.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # targets: the next bytes
    again = datasets.random_windows(corpus.train, 5, 32, numpy.random.default_rng(0))
    numpy.testing.assert_array_equal(x, again[0])
    assert datasets.unigram_bits(numpy.array([0, 1, 0, 1], numpy.uint8)) == 1.0
    assert datasets.unigram_bits(numpy.zeros(10, numpy.uint8)) == 0.0


def test_stdlib_corpus_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(datasets.DataError, match="cannot read the standard-library file"):
        datasets.load_stdlib_text(folder=tmp_path)


@pytest.mark.parametrize("args,message", [
    (("--model", "gpt", "--epochs", "2"), "--model gpt trains for --steps"),
    (("--model", "gpt", "--data", "digits"), "--model gpt trains on --data stdlib"),
    (("--data", "stdlib"), "pass --model gpt"),
    (("--n-layer", "2"), "--n-layer is only for --model gpt"),
    (("--model", "gpt", "--n-embd", "30", "--n-head", "4"), "must be divisible by --n-head"),
    (("--model", "gpt", "--steps", "0"), "--steps must be >= 1"),
    (("--model", "gpt", "--sample", "-1"), "--sample must be >= 0"),
    (("--model", "gpt", "--limit", "100"), "--limit must be >= 1300 bytes"),
])
def test_gpt_bad_options_are_one_line_errors(tmp_path, args, message):
    result = _cli("--out", str(tmp_path / "o"), *args, cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_training_steps_never_read_the_device(tmp_path, monkeypatch, capsys):
    """The classifier loop keeps its loss and accuracy sums on the device: no step calls
    Tensor.item (a GPU sync); the sums are read every POSTFIX_EVERY steps for the progress
    bar and once at the end of each epoch, and give the numbers of a per-step sum."""
    pytest.importorskip("tqdm")
    items = []
    real_item = gpuops.Tensor.item

    def counted_item(self):
        items.append(self.shape)
        return real_item(self)

    reads = []
    real_read = train._EpochSums.read

    def counted_read(self):
        reads.append(len(self.sizes))
        return real_read(self)

    monkeypatch.setattr(gpuops.Tensor, "item", counted_item)
    monkeypatch.setattr(train._EpochSums, "read", counted_read)
    monkeypatch.setattr(train, "POSTFIX_EVERY", 2)
    assert main(["train", "--out", str(tmp_path / "a"), "--backend", "numpy", "--limit", "160",
                 "--epochs", "2"]) == 0  # 160 training images, batch 32: 5 steps per epoch
    capsys.readouterr()
    assert items == []
    assert reads == [2, 4, 5, 5] * 2  # postfix after steps 2, 4, 5, then the epoch's record
    history = json.loads((tmp_path / "a" / "metrics.json").read_text())["history"]
    sums = train._EpochSums(numpy, 2)
    losses, logits = [0.5, 0.25], numpy.eye(3)[[0, 1, 2, 0]]
    for loss, labels in zip(losses, (numpy.array([0, 1]), numpy.array([2, 2]))):
        sums.add(numpy.asarray(loss, numpy.float32), logits[:2] if labels[0] == 0
                 else logits[2:], labels)
    assert sums.read() == (0.5 * 2 + 0.25 * 2, 3, 4)
    assert len(history) == 2 and all(0 <= h["train_accuracy"] <= 1 for h in history)

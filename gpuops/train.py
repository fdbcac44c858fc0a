"""``python -m gpuops train``: train a model with gpuops' autograd, layers and optimizers.

Default: an MLP on the embedded handwritten digits (8x8), Adam, on the GPU when one
is usable, else on the CPU. ``--model cnn``: a small conv/pool/LRN network. ``--model gpt``:
a byte-level GPT-2 (``gpuops.gpt``) on the Python standard library's own source files
(read from the running interpreter; no download), AdamW with linear warmup and cosine
decay, gradient clipping at 1.0; it reports training and validation loss in bits per byte
next to the unigram baseline (the entropy of the training bytes) and prints a sampled
continuation (``--sample N`` bytes).
Writes ``metrics.json``, ``training.png`` (the loss curves; test accuracy per epoch for the
classifiers) and ``checkpoint.npz`` (model, optimizer, history) to ``--out``; ``--resume``
continues from that checkpoint up to ``--epochs`` (``--steps`` for the GPT). A checkpoint
in ``--out`` from a run with other settings is never overwritten: that is an error
unless ``--resume`` is given. Ctrl-C stops with exit status 130 and prints the command
that resumes from the last checkpoint.
The classifiers' loss and accuracy sums stay on the device (read every 50 steps for the
progress bar and once per epoch); ``--cuda-graph`` (mlp, sgd, float32, CuPy) captures the
training step once as a CUDA graph and replays it (:mod:`gpuops.graph`).
Same seed on the CPU → the same numbers: parameters come from ``nn.manual_seed``,
the batch order of epoch e from a generator seeded with (seed, e), the GPT's windows of
step s from one seeded with (seed, s).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import shlex
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

import numpy

from . import distributed, graph, nn
from .autograd import Tensor, no_grad
from .backend import get_array_module, gpu_available, to_cpu, to_gpu
from .datasets import (DataError, Dataset, TextCorpus, load_digits, load_mnist,
                       load_stdlib_text, random_windows, shard, unigram_bits)
from .gpt import GPT
from .optim import SGD, Adam, AdamW, Optimizer
from .optim.lr_scheduler import WarmupCosineLR
from .amp import GradScaler, autocast, bfloat16

__all__ = ["TrainError", "add_arguments", "build_model", "run", "main"]

COMMAND = "python -m gpuops train"
CHECKPOINT = "checkpoint.npz"
# The settings a resumed run may change; it must share every other one with the checkpoint.
LENGTH_KEYS = ("epochs", "steps", "lr")
# --dtype: the autocast dtype of the mixed-precision runs (None: float32 throughout).
DTYPES = {"float32": None, "bfloat16": bfloat16, "float16": numpy.dtype(numpy.float16)}


class TrainError(ValueError):
    """A bad option or an unusable checkpoint: reported in one line, exit status 1."""


# Defaults per data set: the digits are small (1,437 training images), MNIST is not.
DEFAULTS = {"digits": {"epochs": 30, "batch_size": 32}, "mnist": {"epochs": 5, "batch_size": 128}}
CNN_DIGITS_EPOCHS = 15  # the CNN is ~20x the MLP's work per step; 97-98% by epoch 13-18
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}
# The GPT's defaults: trains in about 3 minutes on 2 CPU cores (see docs).
GPT_DEFAULTS = {"steps": 1500, "batch_size": 16, "lr": 3e-3, "block_size": 64, "n_layer": 2,
                "n_head": 4, "n_embd": 64, "eval_interval": 100}
GPT_OPTIONS = ("steps", "block_size", "n_layer", "n_head", "n_embd", "eval_interval")
GPT_WEIGHT_DECAY = 0.1  # on the matrices and embeddings only (nanoGPT)
GPT_CLIP = 1.0  # the gradients' joint 2-norm is clipped to this
GPT_EVAL_WINDOWS = 64  # validation windows per evaluation, evenly spaced over the text
SAMPLE_PROMPT = 32  # bytes of validation text that start the sample
# Steps between the progress bar's updates of the running loss and accuracy (each update
# reads the device; the training steps themselves never wait for it).
POSTFIX_EVERY = 50
BASELINE = "unigram baseline"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", choices=["digits", "mnist", "stdlib"], default=None,
                        help="digits (embedded, 8x8; the default for mlp and cnn), mnist (IDX "
                        "files in --data-dir), or stdlib (bytes of Python's own standard "
                        "library sources; the gpt's data)")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the MNIST IDX files (gzipped or not); an empty "
                        "training or test set is an error")
    parser.add_argument("--model", choices=["mlp", "cnn", "gpt"], default="mlp")
    parser.add_argument("--epochs", type=int, default=None,
                        help="total epochs (default: digits 30, or 15 for the cnn; mnist 5)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"default: 32 digits, 128 mnist, {GPT_DEFAULTS['batch_size']} gpt")
    parser.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default=None,
                        help="default: adam; adamw for the gpt")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate (default: 0.05 sgd with momentum 0.9, 1e-3 adam/adamw; "
                        f"gpt {GPT_DEFAULTS['lr']}, the peak of warmup and cosine decay)")
    gpt = parser.add_argument_group("gpt (--model gpt)")
    gpt.add_argument("--steps", type=int, default=None,
                     help=f"total optimizer steps (default {GPT_DEFAULTS['steps']})")
    for option, meaning in (("block-size", "context length in bytes"),
                            ("n-layer", "transformer blocks"), ("n-head", "attention heads"),
                            ("n-embd", "width"),
                            ("eval-interval", "steps between validation and checkpoints")):
        gpt.add_argument(f"--{option}", type=int, default=None,
                         help=f"{meaning} (default {GPT_DEFAULTS[option.replace('-', '_')]})")
    gpt.add_argument("--sample", type=int, default=200,
                     help="bytes sampled after training (default 200; 0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32",
                        help="float32, or mixed precision: float32 weights with the "
                             "matrix products in bfloat16 or float16 (gpuops.autocast; "
                             "float16 with a GradScaler)")
    parser.add_argument("--backend", choices=["auto", "numpy", "cupy"], default="auto",
                        help="auto: cupy when a GPU is usable, else numpy")
    parser.add_argument("--out", default="gpuops-train",
                        help="output folder for metrics.json, training.png, checkpoint.npz "
                        "(default: ./gpuops-train); refuses to overwrite a checkpoint there from a "
                        "run with other settings (use --resume, or another --out)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from --out/checkpoint.npz up to --epochs (--steps "
                        "for the gpt)")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N training and N//4 test images, or the first "
                        "N bytes of the gpt's text (quick runs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="mlp with --optimizer sgd on the CuPy backend: after one eager "
                        "step, capture the whole training step as a CUDA graph and replay it "
                        "for every full batch (gpuops.graph; the last partial batch runs "
                        "eagerly); float32, one process")
    parser.add_argument("--nproc", type=int, default=None,
                        help="train data-parallel in N processes started with mpiexec (the "
                        "distributed extra; or start the command with mpiexec -n N); "
                        "--batch-size is per process; rank 0 prints and writes")

    def one_line_error(message: str) -> NoReturn:
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)

    # Replacing a method on an instance is deliberate here (argparse has no hook for it).
    parser.error = one_line_error  # type: ignore[method-assign]


def build_model(name: str, image_shape: tuple, classes: int) -> nn.Module:
    """The MLP or the small conv/pool/LRN network for (C, H, W) images."""
    c, h, w = image_shape
    if name == "mlp":
        return nn.Sequential(nn.Flatten(),
                             nn.Linear(c * h * w, 256, activation="relu"),
                             nn.Linear(256, 256, activation="relu"),
                             nn.Linear(256, classes))
    # Two conv blocks, each halving H and W (8x8 → 4x4 → 2x2; 28x28 → 14x14 → 7x7).
    return nn.Sequential(nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(),
                         nn.LocalResponseNorm(5, alpha=1e-3, beta=0.75, k=2.0),
                         nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(),
                         nn.Linear(64 * (h // 4) * (w // 4), 128, activation="relu"),
                         nn.Dropout(0.25),
                         nn.Linear(128, classes))


def _optimizer(name: str, params: list, lr: float) -> Optimizer:
    """``params``: Tensors, or parameter groups (dicts) with their own weight decay."""
    if name == "sgd":
        return SGD(params, lr=lr, momentum=0.9, nesterov=True)
    return (Adam if name == "adam" else AdamW)(params, lr=lr)


def _config(args: argparse.Namespace) -> dict:
    """The run's settings from the options (defaults filled in), checked."""
    if getattr(args, "cuda_graph", False):
        _check_cuda_graph(args)
    if args.model == "gpt":
        return _gpt_config(args)
    data = args.data or "digits"
    if data == "stdlib":
        raise TrainError("--data stdlib is the gpt's text: pass --model gpt")
    for key in GPT_OPTIONS:
        if getattr(args, key) is not None:
            raise TrainError(f"--{key.replace('_', '-')} is only for --model gpt")
    defaults = DEFAULTS[data]
    optimizer = args.optimizer or "adam"
    config = {"data": data, "model": args.model,
              "epochs": args.epochs if args.epochs is not None else (
                  CNN_DIGITS_EPOCHS if (data, args.model) == ("digits", "cnn")
                  else defaults["epochs"]),
              "batch_size": args.batch_size if args.batch_size is not None
              else defaults["batch_size"],
              "optimizer": optimizer,
              "lr": args.lr if args.lr is not None else DEFAULT_LR[optimizer],
              "seed": args.seed, "limit": args.limit, "dtype": args.dtype}
    if config["epochs"] < 1:
        raise TrainError(f"--epochs must be >= 1, got {config['epochs']}")
    _check_common(config)
    if args.limit is not None and args.limit < 4:
        raise TrainError(f"--limit must be >= 4, got {args.limit}")
    if data == "mnist" and not args.data_dir:
        raise TrainError("--data mnist needs --data-dir DIR (the folder of the IDX files)")
    if data == "digits" and args.data_dir:
        raise TrainError("--data-dir is only for --data mnist")
    return config


def _check_cuda_graph(args: argparse.Namespace) -> None:
    """--cuda-graph: the conditions of gpuops.graph that the options decide."""
    why = None
    if args.model != "mlp":
        why = (f"the {args.model} draws a new dropout seed every step" if args.model == "cnn"
               else "the gpt's learning rate changes every step (warmup, cosine decay)")
    elif (args.optimizer or "adam") != "sgd":
        why = (f"{args.optimizer or 'adam (the default)'}'s bias correction 1 - beta^t is a "
               "host scalar that changes every step; pass --optimizer sgd")
    elif args.dtype != "float32":
        why = f"--dtype {args.dtype} is not supported with it (float32 only)"
    elif args.nproc not in (None, 1) or distributed._launcher_size() not in (None, 1):
        why = "several processes all-reduce the gradients on the host"
    elif args.backend == "numpy":
        why = "--backend numpy runs no kernels"
    elif not gpu_available():
        why = "it needs CuPy and a usable CUDA GPU (CuPy is missing or sees no device)"
    if why:
        raise TrainError(f"--cuda-graph cannot capture this run: {why}")


def _gpt_config(args: argparse.Namespace) -> dict:
    if args.data not in (None, "stdlib"):
        raise TrainError(f"--model gpt trains on --data stdlib, not {args.data}")
    if args.data_dir:
        raise TrainError("--data-dir is only for --data mnist")
    if args.epochs is not None:
        raise TrainError("--epochs is for mlp and cnn; --model gpt trains for --steps")
    optimizer = args.optimizer or "adamw"
    config = {"data": "stdlib", "model": "gpt", "optimizer": optimizer, "seed": args.seed,
              "limit": args.limit, "dtype": args.dtype}
    for key in ("steps", "batch_size", "lr", *GPT_OPTIONS[1:]):
        value = getattr(args, key)
        config[key] = GPT_DEFAULTS[key] if value is None else value
    for key in ("steps", "block_size", "n_layer", "n_head", "n_embd", "eval_interval"):
        if config[key] < 1:
            raise TrainError(f"--{key.replace('_', '-')} must be >= 1, got {config[key]}")
    if config["n_embd"] % config["n_head"]:
        raise TrainError(f"--n-embd ({config['n_embd']}) must be divisible by --n-head "
                         f"({config['n_head']})")
    _check_common(config)
    if args.sample < 0:
        raise TrainError(f"--sample must be >= 0, got {args.sample}")
    if args.limit is not None and args.limit < 20 * (config["block_size"] + 1):
        raise TrainError(f"--limit must be >= {20 * (config['block_size'] + 1)} bytes (the "
                         f"validation tenth must hold a window of --block-size + 1), "
                         f"got {args.limit}")
    return config


def _check_common(config: dict) -> None:
    if config["batch_size"] < 1:
        raise TrainError(f"--batch-size must be >= 1, got {config['batch_size']}")
    if not config["lr"] > 0:
        raise TrainError(f"--lr must be > 0, got {config['lr']}")


def _mixed(config: dict) -> Any:
    """The autocast region of the run's --dtype: float32 weights, matrix products in 16 bits
    (a disabled region for float32)."""
    dtype = DTYPES[config["dtype"]]
    return autocast(dtype or DTYPES["bfloat16"], enabled=dtype is not None)


def _backend(name: str) -> str:
    if name == "cupy" and not gpu_available():
        raise TrainError("--backend cupy: no usable CUDA GPU (CuPy missing or no device)")
    if name == "auto":
        return "cupy" if gpu_available() else "numpy"
    return name


def _load(args: argparse.Namespace, config: dict) -> Dataset:
    data = load_digits() if config["data"] == "digits" else load_mnist(args.data_dir)
    if config["limit"] is not None:
        data = data.subset(config["limit"], max(1, config["limit"] // 4))
    return data


def _progress(total: int, desc: str, quiet: bool) -> Any:
    """A context manager that gives a tqdm bar (closed on leaving it, Ctrl-C included),
    or None when quiet or without tqdm."""
    if quiet:
        return contextlib.nullcontext()
    try:
        from tqdm import tqdm
    except ImportError:
        return contextlib.nullcontext()
    return tqdm(total=total, desc=desc, unit="batch", leave=True, dynamic_ncols=True)


def _over_shard(model: nn.Module, n: int, batch: int,
                fn: Callable[[slice, slice], float]) -> tuple[float, float]:
    """``fn(shard_part, batch_part)`` summed over this process's shard of ``n`` examples in
    batches, in evaluation mode without gradients, then over the processes: (sum, count)."""
    part = shard(n, distributed.rank(), distributed.world_size())
    model.eval()
    total = 0.0
    indices = range(n)[part]
    with no_grad():
        for i in range(0, len(indices), batch):
            total += fn(part, slice(i, i + batch))
    model.train()
    total, count = distributed.all_reduce(numpy.array([total, len(indices)], numpy.float64))
    return total, count


def _accuracy(model: nn.Module, x: Any, y: Any, batch: int = 1024) -> float:
    """The accuracy on ``x``, ``y``: each process counts its shard, the counts are summed."""
    def correct(part: slice, rows: slice) -> float:
        logits = model(Tensor(x[part][rows])).data
        return int((logits.argmax(axis=1) == y[part][rows]).sum())
    correct_count, total = _over_shard(model, len(y), batch, correct)
    return correct_count / max(1, total)


def _save_checkpoint(path: Path, model: nn.Module, optimizer: Optimizer, config: dict,
                     history: list, scaler: GradScaler) -> None:
    if distributed.rank() != 0:  # one writer: rank 0 (the weights are the same on every rank)
        return
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim/{k}": numpy.asarray(v) for k, v in optimizer.state_dict().items()})
    arrays.update({f"scaler/{k}": numpy.asarray(v) for k, v in scaler.state_dict().items()})
    arrays["config"] = numpy.array(json.dumps(config))
    arrays["history"] = numpy.array(json.dumps(history))
    tmp = path.with_name(path.name + ".tmp.npz")
    try:
        # The keys are model/..., optim/..., scaler/..., config, history: never allow_pickle.
        numpy.savez(tmp, **arrays)  # type: ignore[arg-type]
        tmp.replace(path)  # atomic: the earlier checkpoint stays whole until here
    except OSError as e:
        raise TrainError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)  # what a failed or interrupted write left behind


# What numpy.load and reading an archive member raise for a file that is not a checkpoint.
_NOT_A_CHECKPOINT = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def _saved_run(path: Path) -> tuple[dict, list]:
    """The config and history stored in the checkpoint at ``path``."""
    try:
        with numpy.load(path) as f:
            return json.loads(str(f["config"])), json.loads(str(f["history"]))
    except _NOT_A_CHECKPOINT as e:
        raise TrainError(f"{path} is not a gpuops checkpoint ({e})") from None


def _difference(saved: dict, config: dict, keys: Iterable[str]) -> str | None:
    """The first of ``keys`` whose value in the checkpoint's ``saved`` config is not this
    run's, in words; None when they all agree."""
    for key in keys:
        if saved.get(key) != config[key]:
            return (f"the checkpoint was made with {key}={saved.get(key)!r}, "
                    f"this run has {key}={config[key]!r}")
    return None


def _resume_keys(config: dict) -> list:
    """The settings a checkpoint must share with a run that resumes it (all but the run's
    length and learning rate)."""
    return [key for key in config if key not in LENGTH_KEYS]


def _refuse_to_overwrite(out: Path, config: dict) -> None:
    """Without --resume, only a checkpoint of the very same settings (a rerun, which
    writes the same numbers again) may be overwritten."""
    path = out / CHECKPOINT
    if not path.exists():
        return
    try:
        saved, _history = _saved_run(path)
    except TrainError as e:
        raise TrainError(f"--out {out}: {e}; not overwriting it: pass another --out") from None
    other_run = _difference(saved, config, _resume_keys(config))
    if other_run:
        raise TrainError(f"--out {out} holds the checkpoint of another run ({other_run}); "
                         f"not overwriting it: pass another --out, or delete {path}")
    other_epochs_or_lr = _difference(saved, config, config)
    if other_epochs_or_lr:
        raise TrainError(f"--out {out} holds the checkpoint of a run with other settings "
                         f"({other_epochs_or_lr}); pass --resume to continue it, or another "
                         f"--out to start afresh")


def _load_checkpoint(path: Path, model: nn.Module, optimizer: Optimizer,
                     config: dict, scaler: GradScaler) -> list:
    if not path.is_file():
        raise TrainError(f"--resume: no checkpoint at {path}")
    try:
        with numpy.load(path) as f:
            saved = json.loads(str(f["config"]))
            history = json.loads(str(f["history"]))
            model_state = {k[6:]: f[k] for k in f.files if k.startswith("model/")}
            optim_state = {k[6:]: f[k] for k in f.files if k.startswith("optim/")}
            scaler_state = {k[7:]: f[k] for k in f.files if k.startswith("scaler/")}
    except _NOT_A_CHECKPOINT as e:
        raise TrainError(f"--resume: {path} is not a gpuops checkpoint ({e})") from None
    difference = _difference(saved, config, _resume_keys(config))
    if difference:
        raise TrainError(f"--resume: {difference}")
    try:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
        if scaler_state:  # float16 runs: the loss scale and its growth count
            scaler.load_state_dict(scaler_state)
    except ValueError as e:
        raise TrainError(f"--resume: {e}") from None
    optimizer.lr = config["lr"]
    return history


def _plot(path: Path, title: str, x: list, xlabel: str, panels: list) -> bool:
    """Side-by-side panels ``(title, ylabel, {label: values over x})`` (a curve labelled
    :data:`BASELINE` dashed); False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, (panel, ylabel, curves) in zip(axes[0], panels):
        for i, (label, values) in enumerate(curves.items()):
            if label == BASELINE:  # a constant: a dashed line without markers
                ax.plot(x, values, color=f"C{i}", label=label, linestyle="--")
            else:
                ax.plot(x, values, marker="o" if len(x) < 40 else None, color=f"C{i}",
                        label=label)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=panel)
        ax.grid(alpha=0.3)
        if len(curves) > 1:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _small_matmuls(data: str) -> Any:
    """One BLAS thread for the 8x8 digits and the GPT's text: their matrix products are so
    small that OpenBLAS's threads only spin (measured on 2 busy cores: 76 s of CPU time for
    the default digits run with its threads, 7 s with one; 0.73 s against 0.073 s per step
    of the default GPT). Needs threadpoolctl (the train extra)."""
    if data not in ("digits", "stdlib"):
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def run(args: argparse.Namespace) -> dict:
    """Train as ``args`` say; return the metrics written to ``metrics.json``."""
    config = _config(args)
    distributed.init()
    if distributed.rank() != 0:  # one process prints: rank 0
        args = argparse.Namespace(**{**vars(args), "quiet": True})
    with _small_matmuls(config["data"]):
        if config["model"] == "gpt":
            return _run_gpt(args, config)
        return _run(args, config)


def _prepare(args: argparse.Namespace, config: dict, load: Callable[[], Any]) -> tuple:
    """The backend, the --out folder (checked, made) and the data (``load()``), in the
    order that reports a bad option or bad data before anything is written."""
    where = _backend(args.backend)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} is a file, not a folder")
    if not args.resume:
        _refuse_to_overwrite(out, config)
    data = load()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainError(f"--out {out}: {e.strerror or e}") from None
    return where, out, data


def _data_parallel(model: nn.Module) -> Callable[[], None]:
    """With several processes: ``model`` wrapped in DistributedDataParallel (rank 0's
    weights; gradients averaged over the ranks during backward), whose ``finish`` (to call
    before the optimizer step) is returned. Alone: nothing to do."""
    if distributed.world_size() == 1:
        return lambda: None
    return distributed.DistributedDataParallel(model).finish


class _EpochSums:
    """The training loss and the correct predictions of an epoch's steps, kept on the
    device (arrays of the backend's ``xp``: no step waits for the GPU) and read when
    asked: at the end of the epoch, and every :data:`POSTFIX_EVERY` steps for the
    progress bar. The host adds ``loss * batch`` in step order in float64, as a per-step
    ``loss.item()`` would: the same numbers."""

    def __init__(self, xp: Any, steps: int) -> None:
        self.losses = xp.zeros(steps, numpy.float64)  # each step's mean loss (exact widening)
        self.correct = xp.zeros(steps, numpy.int64)  # each step's correct predictions
        self.sizes: list[int] = []  # each step's batch (known on the host)

    def add(self, loss: Any, logits: Any, labels: Any) -> None:
        s = len(self.sizes)
        self.losses[s] = loss.reshape(())
        self.correct[s] = (logits.argmax(axis=1) == labels).sum()
        self.sizes.append(len(labels))

    def read(self) -> tuple[float, int, int]:
        """(Σ loss · batch, correct, images) of the steps so far (one read of the device)."""
        steps = len(self.sizes)
        loss_sum = 0.0
        for loss, size in zip(to_cpu(self.losses[:steps]).tolist(), self.sizes):
            loss_sum += loss * size
        return loss_sum, int(to_cpu(self.correct[:steps]).sum()), sum(self.sizes)


def _add_in_order(total: float, losses: list) -> float:
    """``total`` plus the 0-d device ``losses`` in order, in float64 (what a per-step
    ``float(loss.item())`` sum gives), read from the device at once; ``losses`` emptied."""
    if losses:
        xp = get_array_module(losses[0])
        for value in to_cpu(xp.stack(losses)).astype(numpy.float64).tolist():
            total += value
        losses.clear()
    return total


class _Steps:
    """The training steps of ``--cuda-graph`` (:mod:`gpuops.graph`): the first step runs
    eagerly on static copies of its batch (the warm-up), then the step is captured and
    every batch of the first batch's shape is copied into the static buffers and replayed;
    a batch of another shape (the last partial batch) runs eagerly. A replay refuses when
    the optimizer's hyperparameters have changed since the capture."""

    def __init__(self, step: Callable[[Any, Any], tuple], optimizer: Optimizer) -> None:
        self.step = step
        self.optimizer = optimizer
        self.static: tuple | None = None
        self.graph: graph.StepGraph | None = None

    def _hyperparameters(self) -> list:
        return [{k: v for k, v in group.items() if k != "params"}
                for group in self.optimizer.param_groups]

    def __call__(self, x: Any, labels: Any) -> tuple:
        if self.static is None:
            self.static = (x.copy(), labels.copy())
            outputs = self.step(*self.static)
            self.graph = graph.capture(self.step, self.static, self._hyperparameters)
            return outputs
        static_x, static_labels = self.static
        if x.shape != static_x.shape or labels.shape != static_labels.shape:
            return self.step(x, labels)
        static_x[...] = x
        static_labels[...] = labels
        assert self.graph is not None
        return self.graph.replay()


def _run(args: argparse.Namespace, config: dict) -> dict:
    """The classifiers (mlp, cnn): epochs over the training images."""
    where, out, data = _prepare(args, config, lambda: _load(args, config))
    nn.manual_seed(config["seed"])
    model = build_model(config["model"], data.image_shape, max(10, data.classes))
    if where == "cupy":
        model.to_gpu()
        train_x, train_y, test_x, test_y = (to_gpu(a) for a in (
            data.train_x, data.train_y, data.test_x, data.test_y))
    else:
        train_x, train_y, test_x, test_y = data.train_x, data.train_y, data.test_x, data.test_y
    optimizer = _optimizer(config["optimizer"], model.parameters(), config["lr"])
    criterion = nn.CrossEntropyLoss()
    scaler = GradScaler(enabled=config["dtype"] == "float16")  # float16's narrow range
    history: list = []
    if args.resume:
        history = _load_checkpoint(out / CHECKPOINT, model, optimizer, config, scaler)
    finish = _data_parallel(model)
    xp = get_array_module(train_x)

    def step(x: Any, labels: Any) -> tuple:
        """One training step on the batch ``x``, ``labels``: the loss and the logits."""
        with _mixed(config):
            logits = model(Tensor(x))
            loss = criterion(logits, labels)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        finish()
        scaler.step(optimizer)
        scaler.update()
        return loss.data, logits.data

    run_step = _Steps(step, optimizer) if getattr(args, "cuda_graph", False) else step

    # Each step reads a global batch of world * batch images of the epoch's order, split
    # among the ranks in equal parts (a last global batch too small to split is left out).
    rank, world = distributed.rank(), distributed.world_size()
    n, batch = len(data.train_y), config["batch_size"] * world
    usable = n - n % batch % world
    steps = -(-usable // batch)
    start = time.perf_counter()
    for epoch in range(len(history) + 1, config["epochs"] + 1):
        order = numpy.random.default_rng([config["seed"], epoch]).permutation(n)
        if where == "cupy":
            order = to_gpu(order)
        with _progress(steps, f"epoch {epoch}/{config['epochs']}", args.quiet) as bar:
            epoch_start = time.perf_counter()
            sums = _EpochSums(xp, steps)
            for s in range(steps):
                idx = order[s * batch:min((s + 1) * batch, usable)]
                idx = idx[shard(len(idx), rank, world, drop_remainder=True)]
                labels = train_y[idx]
                loss, logits = run_step(train_x[idx], labels)
                sums.add(loss, logits, labels)
                if bar is not None:
                    bar.update(1)
                    if (s + 1) % POSTFIX_EVERY == 0 or s + 1 == steps:
                        loss_sum, correct, seen = sums.read()
                        bar.set_postfix(loss=f"{loss_sum / seen:.4f}",
                                        acc=f"{correct / seen:.4f}")
            with _mixed(config):
                test_accuracy = _accuracy(model, test_x, test_y)
            loss_sum, correct, seen = distributed.all_reduce(
                numpy.array(sums.read(), numpy.float64))
            record = {"epoch": epoch, "train_loss": loss_sum / seen,
                      "train_accuracy": correct / seen, "test_accuracy": test_accuracy,
                      "seconds": round(time.perf_counter() - epoch_start, 3)}
            history.append(record)
            if bar is not None:
                bar.set_postfix(loss=f"{record['train_loss']:.4f}",
                                acc=f"{record['train_accuracy']:.4f}", test=f"{test_accuracy:.4f}")
        if bar is None and not args.quiet:
            print(f"epoch {epoch}/{config['epochs']}: loss {record['train_loss']:.4f} "
                  f"train acc {record['train_accuracy']:.4f} test acc {test_accuracy:.4f}")
        _save_checkpoint(out / CHECKPOINT, model, optimizer, config, history, scaler)
    if not history:
        _save_checkpoint(out / CHECKPOINT, model, optimizer, config, history, scaler)

    final: float | None = history[-1]["test_accuracy"] if history else None
    seconds = round(time.perf_counter() - start, 3)
    metrics = {"config": config, "backend": where, "processes": world, "train_images": n,
               "test_images": len(data.test_y), "seconds": seconds,
               "final_test_accuracy": final, "history": history}
    if rank == 0:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plotted = rank == 0 and history and _plot(
        out / "training.png", f"{config['model']} on {config['data']} ({where})",
        [h["epoch"] for h in history], "epoch",
        [("training loss", "training loss", {"train": [h["train_loss"] for h in history]}),
         ("test accuracy", "test accuracy (%)",
          {"test": [100 * h["test_accuracy"] for h in history]})])
    if not args.quiet:
        accuracy = "n/a" if final is None else f"{100 * final:.2f}%"
        print(f"{config['model']} on {config['data']} ({where}): test accuracy "
              f"{accuracy} after {_count(len(history), 'epoch')}, "
              f"{seconds:.1f} s; "
              f"wrote {out / 'metrics.json'}, {out / CHECKPOINT}"
              + (f", {out / 'training.png'}" if plotted else " (no plot: matplotlib missing)"))
    return metrics


def _gpt_parameter_groups(model: nn.Module) -> list:
    """Weight decay on the matrices and embedding tables, none on biases and norms."""
    params = model.parameters()
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": GPT_WEIGHT_DECAY},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def _warmup_cosine(optimizer: Optimizer, steps: int) -> WarmupCosineLR:
    """Linear warmup over the first tenth of the steps (at most 100), then cosine decay to
    a tenth of the peak learning rate at the last step (llm.c's GPT-2 schedule);
    ``step()`` after each update."""
    warmup = max(1, min(100, steps // 10))
    return WarmupCosineLR(optimizer, warmup, max(steps, warmup + 1), optimizer.lr / 10)


def _bits(nats: float) -> float:
    return nats / math.log(2)


def _windows(text: numpy.ndarray, block: int, starts: numpy.ndarray, where: str) -> tuple:
    """The windows of ``text`` at ``starts``: inputs and targets (n, block), int64, on the
    run's backend."""
    index = starts[:, None] + numpy.arange(block)
    x, y = text[index].astype(numpy.int64), text[index + 1].astype(numpy.int64)
    return (to_gpu(x), to_gpu(y)) if where == "cupy" else (x, y)


def _evenly_spaced(text: numpy.ndarray, block: int) -> numpy.ndarray:
    """:data:`GPT_EVAL_WINDOWS` starts evenly spaced over ``text``: the windows of every
    evaluation during training (an estimate that costs little)."""
    n = min(GPT_EVAL_WINDOWS, len(text) - block)
    return numpy.linspace(0, len(text) - block - 1, n).astype(numpy.int64)


def _tiling(text: numpy.ndarray, block: int) -> numpy.ndarray:
    """Starts of non-overlapping windows over all of ``text``: the final evaluation."""
    return numpy.arange(0, len(text) - block, block)


def _evaluate(model: GPT, x: Any, y: Any, batch: int) -> float:
    """The mean loss (nats per byte) over the windows ``x`` → ``y``, in evaluation mode
    (each process evaluates its shard of the windows; the sums are added up)."""
    def loss_sum(part: slice, rows: slice) -> float:
        xs, ys = x[part][rows], y[part][rows]
        return float(model.loss(xs, ys).item()) * len(xs)
    total, count = _over_shard(model, len(x), batch, loss_sum)
    return total / count


def _sample(model: GPT, corpus: TextCorpus, n: int, seed: int) -> str:
    """``n`` bytes sampled (temperature 1) after the first bytes of the validation text."""
    prompt = corpus.val[:SAMPLE_PROMPT].astype(numpy.int64)[None]
    tokens = model.generate(prompt, n, seed=seed)[0]
    return bytes(tokens.astype(numpy.uint8).tolist()).decode("utf-8", errors="replace")


def _run_gpt(args: argparse.Namespace, config: dict) -> dict:
    """The byte-level GPT: ``steps`` AdamW updates on random windows of the training text,
    evaluated (and checkpointed) every ``eval_interval`` steps."""
    where, out, corpus = _prepare(args, config, lambda: load_stdlib_text(limit=config["limit"]))
    nn.manual_seed(config["seed"])
    block, batch = config["block_size"], config["batch_size"]
    model = GPT(corpus.vocab_size, block, config["n_layer"], config["n_head"], config["n_embd"])
    if where == "cupy":
        model.to_gpu()
    optimizer = _optimizer(config["optimizer"], _gpt_parameter_groups(model), config["lr"])
    scaler = GradScaler(enabled=config["dtype"] == "float16")  # float16's narrow range
    history: list = []
    if args.resume:
        history = _load_checkpoint(out / CHECKPOINT, model, optimizer, config, scaler)
    finish = _data_parallel(model)
    rank, world = distributed.rank(), distributed.world_size()
    scheduler = _warmup_cosine(optimizer, config["steps"])
    done = history[-1]["step"] if history else 0
    for _ in range(done):  # the schedule is a function of the step: replay it
        scheduler.step()
    val_x, val_y = _windows(corpus.val, block, _evenly_spaced(corpus.val, block), where)

    start = time.perf_counter()
    loss_sum, seen, interval_start = 0.0, 0, time.perf_counter()
    pending: list = []  # the device losses of the steps since the last read
    with _progress(config["steps"] - done, "gpt", args.quiet) as bar:
        for step in range(done + 1, config["steps"] + 1):
            # the windows of one process with batch world * batch, split among the ranks
            x, y = random_windows(corpus.train, world * batch, block,
                                  numpy.random.default_rng([config["seed"], step]))
            part = shard(world * batch, rank, world, drop_remainder=True)
            x, y = x[part], y[part]
            if where == "cupy":
                x, y = to_gpu(x), to_gpu(y)
            with _mixed(config):
                loss = model.loss(x, y)
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            finish()
            scaler.unscale_(optimizer)  # clip the true gradients
            nn.utils.clip_grad_norm_(model.parameters(), GPT_CLIP)
            lr = optimizer.lr
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            pending.append(loss.data.reshape(()))  # read with the others, not per step
            seen += 1
            evaluate = not step % config["eval_interval"] or step == config["steps"]
            if evaluate or (bar is not None and not seen % POSTFIX_EVERY):
                loss_sum = _add_in_order(loss_sum, pending)
            if bar is not None:
                bar.update(1)
                if not pending:
                    bar.set_postfix(bpb=f"{_bits(loss_sum / seen):.3f}")
            if not evaluate:
                continue
            loss_sum = float(distributed.all_reduce(numpy.array([loss_sum]), "mean")[0])
            record = {"step": step, "train_bpb": _bits(loss_sum / seen),
                      "val_bpb": _bits(_evaluate(model, val_x, val_y, batch)), "lr": lr,
                      "seconds": round(time.perf_counter() - interval_start, 3)}
            history.append(record)
            if bar is not None:
                bar.set_postfix(bpb=f"{record['train_bpb']:.3f}", val=f"{record['val_bpb']:.3f}")
            elif not args.quiet:
                print(f"step {step}/{config['steps']}: train {record['train_bpb']:.3f} "
                      f"val {record['val_bpb']:.3f} bits/byte")
            _save_checkpoint(out / CHECKPOINT, model, optimizer, config, history, scaler)
            loss_sum, seen, interval_start = 0.0, 0, time.perf_counter()
    if not history:
        _save_checkpoint(out / CHECKPOINT, model, optimizer, config, history, scaler)

    seconds = round(time.perf_counter() - start, 3)
    baseline = unigram_bits(corpus.train)
    last = history[-1] if history else {}
    tiles = _tiling(corpus.val, block)
    full_x, full_y = _windows(corpus.val, block, tiles, where)
    final_val = _bits(_evaluate(model, full_x, full_y, batch))
    sample = _sample(model, corpus, args.sample, config["seed"]) if args.sample and rank == 0 \
        else ""
    metrics = {"config": config, "backend": where, "processes": world,
               "train_bytes": len(corpus.train),
               "val_bytes": len(corpus.val), "val_windows": len(val_x),
               "parameters": sum(p.size for p in model.parameters()), "seconds": seconds,
               "unigram_bpb": baseline, "final_train_bpb": last.get("train_bpb"),
               "final_val_bpb": final_val, "final_val_bytes": len(tiles) * block,
               "sample": sample, "history": history}
    if rank == 0:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    steps = [h["step"] for h in history]
    plotted = rank == 0 and history and _plot(
        out / "training.png", f"gpt on {config['data']} ({where})", steps, "step",
        [("loss", "bits per byte", {"train": [h["train_bpb"] for h in history],
                                    "validation": [h["val_bpb"] for h in history],
                                    BASELINE: [baseline] * len(history)})])
    if not args.quiet:
        train = "n/a" if not history else f"{last['train_bpb']:.3f}"
        print(f"gpt on {config['data']} ({where}): validation {final_val:.3f} bits/byte "
              f"(training {train}; unigram baseline {baseline:.3f}) after "
              f"{_count(done if not history else history[-1]['step'], 'step')}, "
              f"{seconds:.1f} s; wrote {out / 'metrics.json'}, {out / CHECKPOINT}"
              + (f", {out / 'training.png'}" if plotted else " (no plot: matplotlib missing)"))
        if sample:
            print(f"sample ({args.sample} bytes after {SAMPLE_PROMPT} of validation text):\n"
                  f"{sample}")
    return metrics


def _count(n: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _options(args: argparse.Namespace, leave_out: tuple) -> list[str]:
    """The options of ``args`` that differ from the defaults, but those in ``leave_out``."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = vars(parser.parse_args([]))
    options = []
    for key, value in vars(args).items():
        if key in defaults and key not in leave_out and value != defaults[key]:
            option = "--" + key.replace("_", "-")
            options += [option] if isinstance(value, bool) else [option, str(value)]
    return options


def _resume_command(args: argparse.Namespace) -> str:
    """The command line that resumes the run of ``args``: its options that differ from
    the defaults, and --resume."""
    return shlex.join([*COMMAND.split(), *_options(args, ("resume",)), "--resume"])


def _launch(args: argparse.Namespace) -> int | None:
    """``--nproc N`` outside a job: this command again under ``mpiexec -n N`` (its exit
    status). None when this process trains (alone, or in a job of N processes)."""
    launched = distributed._launcher_size()
    if args.nproc is not None and args.nproc < 1:
        raise TrainError(f"--nproc must be >= 1, got {args.nproc}")
    if launched is not None:
        if args.nproc not in (None, launched):
            raise TrainError(f"--nproc {args.nproc}, but mpiexec started {launched} processes")
        return None
    if args.nproc in (None, 1):
        return None
    _config(args)  # a bad option is reported once, before any process starts
    try:
        command = distributed.mpiexec_command(args.nproc)
    except RuntimeError as e:
        raise TrainError(f"--nproc {args.nproc}: {e}") from None
    command += [sys.executable, "-m", "gpuops", "train", *_options(args, ("nproc",))]
    process = subprocess.Popen(command)
    try:
        return process.wait()
    except KeyboardInterrupt:  # mpiexec passes Ctrl-C on to the processes; rank 0 reports
        process.wait()
        return 130


def _interrupted(args: argparse.Namespace) -> str:
    """What to print after Ctrl-C: the last checkpoint and the command that resumes from it."""
    path = Path(args.out) / CHECKPOINT
    config = _config(args)
    try:
        saved, history = _saved_run(path)
        resumable = not _difference(saved, config, _resume_keys(config))  # else another run's
    except TrainError:  # no checkpoint yet
        resumable = False
    if not resumable:
        return f"{COMMAND}: interrupted before the first checkpoint was written"
    where = (f"step {history[-1]['step'] if history else 0} of {config['steps']}"
             if config["model"] == "gpt" else f"epoch {len(history)} of {config['epochs']}")
    return (f"{COMMAND}: interrupted; the last checkpoint is {path} ({where})\n"
            f"continue with: {_resume_command(args)}")


def main(args: argparse.Namespace) -> int:
    """The ``train`` subcommand: one-line errors for bad options and data, exit status 1;
    Ctrl-C prints how to resume and exits with status 130, as for SIGINT."""
    try:
        status = _launch(args)
        if status is not None:
            return status
        run(args)
    except (TrainError, DataError, graph.GraphError) as e:
        if distributed._launcher_size() is None or distributed.rank() == 0:
            print(f"{COMMAND}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if distributed.rank() == 0:
            print(_interrupted(args), file=sys.stderr)
        return 130
    return 0

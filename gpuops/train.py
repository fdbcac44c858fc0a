"""``python -m gpuops train``: train a classifier with gpuops' autograd, layers and optimizers.

Default: an MLP on the embedded handwritten digits (8x8), Adam, on the GPU when one
is usable, else on the CPU. Writes ``metrics.json``, ``training.png`` (training loss
and test accuracy per epoch) and ``checkpoint.npz`` (model, optimizer, history) to
``--out``; ``--resume`` continues from that checkpoint up to ``--epochs``. A checkpoint
in ``--out`` from a run with other settings is never overwritten: that is an error
unless ``--resume`` is given. Ctrl-C stops with exit status 130 and prints the command
that resumes from the last checkpoint.
Same seed on the CPU → the same numbers: parameters come from ``nn.manual_seed``,
the batch order of epoch e from a generator seeded with (seed, e).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import numpy

from . import nn
from .autograd import Tensor, no_grad
from .backend import gpu_available, to_gpu
from .datasets import DataError, Dataset, load_digits, load_mnist
from .optim import SGD, Adam, AdamW, Optimizer

__all__ = ["TrainError", "add_arguments", "build_model", "run", "main"]

COMMAND = "python -m gpuops train"
CHECKPOINT = "checkpoint.npz"
# The settings a checkpoint must share with a run that resumes it (--epochs and --lr may differ).
RESUME_KEYS = ("data", "model", "optimizer", "batch_size", "seed", "limit")


class TrainError(ValueError):
    """A bad option or an unusable checkpoint: reported in one line, exit status 1."""


# Defaults per data set: the digits are small (1,437 training images), MNIST is not.
DEFAULTS = {"digits": {"epochs": 30, "batch_size": 32}, "mnist": {"epochs": 5, "batch_size": 128}}
CNN_DIGITS_EPOCHS = 15  # the CNN is ~20x the MLP's work per step; 97-98% by epoch 13-18
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", choices=["digits", "mnist"], default="digits",
                        help="digits (embedded, 8x8) or mnist (IDX files in --data-dir)")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the MNIST IDX files (gzipped or not); an empty "
                        "training or test set is an error")
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    parser.add_argument("--epochs", type=int, default=None,
                        help="total epochs (default: digits 30, or 15 for the cnn; mnist 5)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: 32 digits, 128 mnist")
    parser.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="adam")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate (default: 0.05 sgd with momentum 0.9, 1e-3 adam/adamw)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=["auto", "numpy", "cupy"], default="auto",
                        help="auto: cupy when a GPU is usable, else numpy")
    parser.add_argument("--out", default="gpuops-train",
                        help="output folder for metrics.json, training.png, checkpoint.npz "
                        "(default: ./gpuops-train); refuses to overwrite a checkpoint there from a "
                        "run with other settings (use --resume, or another --out)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from --out/checkpoint.npz up to --epochs")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N training and N//4 test images (quick runs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")

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
    if name == "sgd":
        return SGD(params, lr=lr, momentum=0.9, nesterov=True)
    return (Adam if name == "adam" else AdamW)(params, lr=lr)


def _config(args: argparse.Namespace) -> dict:
    defaults = DEFAULTS[args.data]
    config = {"data": args.data, "model": args.model,
              "epochs": args.epochs if args.epochs is not None else (
                  CNN_DIGITS_EPOCHS if (args.data, args.model) == ("digits", "cnn")
                  else defaults["epochs"]),
              "batch_size": args.batch_size if args.batch_size is not None
              else defaults["batch_size"],
              "optimizer": args.optimizer,
              "lr": args.lr if args.lr is not None else DEFAULT_LR[args.optimizer],
              "seed": args.seed, "limit": args.limit}
    if config["epochs"] < 1:
        raise TrainError(f"--epochs must be >= 1, got {config['epochs']}")
    if config["batch_size"] < 1:
        raise TrainError(f"--batch-size must be >= 1, got {config['batch_size']}")
    if not config["lr"] > 0:
        raise TrainError(f"--lr must be > 0, got {config['lr']}")
    if args.limit is not None and args.limit < 4:
        raise TrainError(f"--limit must be >= 4, got {args.limit}")
    if args.data == "mnist" and not args.data_dir:
        raise TrainError("--data mnist needs --data-dir DIR (the folder of the IDX files)")
    if args.data == "digits" and args.data_dir:
        raise TrainError("--data-dir is only for --data mnist")
    return config


def _backend(name: str) -> str:
    if name == "cupy" and not gpu_available():
        raise TrainError("--backend cupy: no usable CUDA GPU (CuPy missing or no device)")
    if name == "auto":
        return "cupy" if gpu_available() else "numpy"
    return name


def _load(args: argparse.Namespace, config: dict) -> Dataset:
    data = load_digits() if args.data == "digits" else load_mnist(args.data_dir)
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


def _accuracy(model: nn.Module, x: Any, y: Any, batch: int = 1024) -> float:
    model.eval()
    correct = 0
    with no_grad():
        for i in range(0, len(y), batch):
            logits = model(Tensor(x[i:i + batch])).data
            correct += int((logits.argmax(axis=1) == y[i:i + batch]).sum())
    model.train()
    return correct / max(1, len(y))


def _save_checkpoint(path: Path, model: nn.Module, optimizer: Optimizer, config: dict,
                     history: list) -> None:
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim/{k}": numpy.asarray(v) for k, v in optimizer.state_dict().items()})
    arrays["config"] = numpy.array(json.dumps(config))
    arrays["history"] = numpy.array(json.dumps(history))
    tmp = path.with_name(path.name + ".tmp.npz")
    try:
        # The keys are model/..., optim/..., config, history: never savez's allow_pickle.
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
    other_run = _difference(saved, config, RESUME_KEYS)
    if other_run:
        raise TrainError(f"--out {out} holds the checkpoint of another run ({other_run}); "
                         f"not overwriting it: pass another --out, or delete {path}")
    other_epochs_or_lr = _difference(saved, config, config)
    if other_epochs_or_lr:
        raise TrainError(f"--out {out} holds the checkpoint of a run with other settings "
                         f"({other_epochs_or_lr}); pass --resume to continue it, or another "
                         f"--out to start afresh")


def _load_checkpoint(path: Path, model: nn.Module, optimizer: Optimizer,
                     config: dict) -> list:
    if not path.is_file():
        raise TrainError(f"--resume: no checkpoint at {path}")
    try:
        with numpy.load(path) as f:
            saved = json.loads(str(f["config"]))
            history = json.loads(str(f["history"]))
            model_state = {k[6:]: f[k] for k in f.files if k.startswith("model/")}
            optim_state = {k[6:]: f[k] for k in f.files if k.startswith("optim/")}
    except _NOT_A_CHECKPOINT as e:
        raise TrainError(f"--resume: {path} is not a gpuops checkpoint ({e})") from None
    difference = _difference(saved, config, RESUME_KEYS)
    if difference:
        raise TrainError(f"--resume: {difference}")
    try:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
    except ValueError as e:
        raise TrainError(f"--resume: {e}") from None
    optimizer.lr = config["lr"]
    return history


def _plot(path: Path, history: list, title: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o")
    left.set(xlabel="epoch", ylabel="training loss", title="training loss")
    right.plot(epochs, [100 * h["test_accuracy"] for h in history], marker="o", color="C1")
    right.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _small_matmuls(data: str) -> Any:
    """One BLAS thread for the 8x8 digits: their matrix products are so small that
    OpenBLAS's threads only spin (measured on 2 busy cores: 76 s of CPU time for the
    default run with its threads, 7 s with one). Needs threadpoolctl (the train extra)."""
    if data != "digits":
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def run(args: argparse.Namespace) -> dict:
    """Train as ``args`` say; return the metrics written to ``metrics.json``."""
    config = _config(args)
    with _small_matmuls(config["data"]):
        return _run(args, config)


def _run(args: argparse.Namespace, config: dict) -> dict:
    where = _backend(args.backend)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} is a file, not a folder")
    if not args.resume:
        _refuse_to_overwrite(out, config)
    data = _load(args, config)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainError(f"--out {out}: {e.strerror or e}") from None

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
    history: list = []
    if args.resume:
        history = _load_checkpoint(out / CHECKPOINT, model, optimizer, config)

    n, batch = len(data.train_y), config["batch_size"]
    steps = -(-n // batch)
    start = time.perf_counter()
    for epoch in range(len(history) + 1, config["epochs"] + 1):
        order = numpy.random.default_rng([config["seed"], epoch]).permutation(n)
        if where == "cupy":
            order = to_gpu(order)
        with _progress(steps, f"epoch {epoch}/{config['epochs']}", args.quiet) as bar:
            epoch_start = time.perf_counter()
            loss_sum = 0.0
            correct = seen = 0
            for s in range(steps):
                idx = order[s * batch:(s + 1) * batch]
                labels = train_y[idx]
                logits = model(Tensor(train_x[idx]))
                loss = criterion(logits, labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.item()) * len(idx)
                correct += int((logits.data.argmax(axis=1) == labels).sum())
                seen += len(idx)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
            test_accuracy = _accuracy(model, test_x, test_y)
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
        _save_checkpoint(out / CHECKPOINT, model, optimizer, config, history)
    if not history:
        _save_checkpoint(out / CHECKPOINT, model, optimizer, config, history)

    final: float | None = history[-1]["test_accuracy"] if history else None
    seconds = round(time.perf_counter() - start, 3)
    metrics = {"config": config, "backend": where, "train_images": n,
               "test_images": len(data.test_y), "seconds": seconds,
               "final_test_accuracy": final, "history": history}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plotted = history and _plot(out / "training.png", history,
                                f"{config['model']} on {config['data']} ({where})")
    if not args.quiet:
        accuracy = "n/a" if final is None else f"{100 * final:.2f}%"
        print(f"{config['model']} on {config['data']} ({where}): test accuracy "
              f"{accuracy} after {_count(len(history), 'epoch')}, "
              f"{seconds:.1f} s; "
              f"wrote {out / 'metrics.json'}, {out / CHECKPOINT}"
              + (f", {out / 'training.png'}" if plotted else " (no plot: matplotlib missing)"))
    return metrics


def _count(n: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _resume_command(args: argparse.Namespace) -> str:
    """The command line that resumes the run of ``args``: its options that differ from
    the defaults, and --resume."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = vars(parser.parse_args([]))
    options = []
    for key, value in vars(args).items():
        if key in defaults and key != "resume" and value != defaults[key]:
            option = "--" + key.replace("_", "-")
            options += [option] if isinstance(value, bool) else [option, str(value)]
    return shlex.join([*COMMAND.split(), *options, "--resume"])


def _interrupted(args: argparse.Namespace) -> str:
    """What to print after Ctrl-C: the last checkpoint and the command that resumes from it."""
    path = Path(args.out) / CHECKPOINT
    config = _config(args)
    try:
        saved, history = _saved_run(path)
        resumable = not _difference(saved, config, RESUME_KEYS)  # else another run's
    except TrainError:  # no checkpoint yet
        resumable = False
    if not resumable:
        return f"{COMMAND}: interrupted before the first checkpoint was written"
    return (f"{COMMAND}: interrupted; the last checkpoint is {path} "
            f"(epoch {len(history)} of {config['epochs']})\n"
            f"continue with: {_resume_command(args)}")


def main(args: argparse.Namespace) -> int:
    """The ``train`` subcommand: one-line errors for bad options and data, exit status 1;
    Ctrl-C prints how to resume and exits with status 130, as for SIGINT."""
    try:
        run(args)
    except (TrainError, DataError) as e:
        print(f"{COMMAND}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(_interrupted(args), file=sys.stderr)
        return 130
    return 0

"""Data sets for ``python -m gpuops train``: the embedded digits, MNIST from IDX files, and
a byte-level text corpus made of the Python standard library's own source files.

The image loaders return a :class:`Dataset` with float32 images in [0, 1], shape
(N, 1, H, W), and int64 labels; the text loader a :class:`TextCorpus` of bytes (vocabulary
256) split into training and validation text. Bad files raise :class:`DataError` with a
one-line message (the command prints it and exits non-zero).
"""
from __future__ import annotations

import gzip
import math
import os
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy

__all__ = ["DataError", "Dataset", "load_digits", "load_mnist", "read_idx", "STDLIB_FILES",
           "TextCorpus", "load_stdlib_text", "random_windows", "unigram_bits", "shard"]

_DATA = Path(__file__).resolve().parent / "data"


class DataError(ValueError):
    """A data set is missing or malformed."""


@dataclass
class Dataset:
    train_x: numpy.ndarray  # float32 (N, 1, H, W) in [0, 1]
    train_y: numpy.ndarray  # int64 (N,)
    test_x: numpy.ndarray
    test_y: numpy.ndarray
    name: str

    @property
    def image_shape(self) -> tuple:
        return tuple(self.train_x.shape[1:])

    @property
    def classes(self) -> int:
        return int(max(self.train_y.max(initial=0), self.test_y.max(initial=0))) + 1

    def subset(self, n_train: int, n_test: int) -> "Dataset":
        return Dataset(self.train_x[:n_train], self.train_y[:n_train], self.test_x[:n_test],
                       self.test_y[:n_test], self.name)


def load_digits(test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (embedded; see gpuops/data/README.md).

    A fixed stratification-free random split (``split_seed``) into train and test.
    """
    with numpy.load(_DATA / "digits.npz") as f:
        images, labels = f["images"], f["labels"]
    order = numpy.random.default_rng(split_seed).permutation(len(labels))
    n_test = int(round(len(labels) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    x = (images.astype(numpy.float32) / 16.0)[:, None]
    y = labels.astype(numpy.int64)
    return Dataset(x[train], y[train], x[test], y[test], "digits")


# IDX: magic (2 zero bytes, a type code, the number of dims), dims as big-endian
# uint32, then the data row-major. http://yann.lecun.com/exdb/mnist/
_IDX_TYPES: dict[int, numpy.dtype] = {
    0x08: numpy.dtype(numpy.uint8), 0x09: numpy.dtype(numpy.int8), 0x0B: numpy.dtype(">i2"),
    0x0C: numpy.dtype(">i4"), 0x0D: numpy.dtype(">f4"), 0x0E: numpy.dtype(">f8")}


def read_idx(path: str | os.PathLike) -> numpy.ndarray:
    """Read one IDX file (gzipped when it starts with the gzip magic)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({ndim} dims, {len(raw)} bytes)")
    dims = tuple(int(d) for d in numpy.frombuffer(raw, ">u4", ndim, 4))
    dtype = _IDX_TYPES[raw[2]]
    expected = header + math.prod(dims) * dtype.itemsize  # exact: int64 could wrap around
    if len(raw) != expected:
        raise DataError(f"{path}: IDX header says dims {dims} ({expected} bytes) but the file "
                        f"has {len(raw)} bytes")
    return numpy.frombuffer(raw, dtype, offset=header).reshape(dims)


_MNIST_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
                "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                 stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: missing {stem} (or {stem}.gz)")


def load_mnist(folder: str | os.PathLike, image_size: tuple = (28, 28)) -> Dataset:
    """MNIST (or any IDX data set of the same layout: Fashion-MNIST, KMNIST) from ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data directory {folder} "
                        + ("is not a folder" if folder.exists() else "does not exist"))
    parts = {key: read_idx(_find(folder, stem)) for key, stem in _MNIST_FILES.items()}
    for key in ("train_x", "test_x"):
        x = parts[key]
        if x.ndim != 3 or tuple(x.shape[1:]) != tuple(image_size):
            raise DataError(f"{_MNIST_FILES[key]}: images have shape {tuple(x.shape[1:])}; "
                            f"expected {tuple(image_size)}")
        if x.dtype != numpy.uint8:
            raise DataError(f"{_MNIST_FILES[key]}: pixels are {x.dtype}; expected uint8")
        if len(x) == 0:
            raise DataError(f"{_MNIST_FILES[key]}: no images (training needs a non-empty "
                            f"training set and test set)")
    for key, images in (("train_y", "train_x"), ("test_y", "test_x")):
        y = parts[key]
        if y.ndim != 1 or len(y) != len(parts[images]):
            raise DataError(f"{_MNIST_FILES[key]}: {tuple(y.shape)} labels for "
                            f"{len(parts[images])} images")
        if y.size and (y.min() < 0 or y.max() > 9):
            raise DataError(f"{_MNIST_FILES[key]}: labels outside 0..9")
    return Dataset(parts["train_x"].astype(numpy.float32)[:, None] / 255.0,
                   parts["train_y"].astype(numpy.int64),
                   parts["test_x"].astype(numpy.float32)[:, None] / 255.0,
                   parts["test_y"].astype(numpy.int64), "mnist")


# Long-stable pure-Python modules present as single files in every CPython 3.10-3.13, sorted:
# about 560 KB of text (the exact bytes vary a little between Python versions).
STDLIB_FILES = ("argparse.py", "calendar.py", "difflib.py", "fractions.py", "functools.py",
                "heapq.py", "inspect.py", "pprint.py", "random.py", "shutil.py", "string.py",
                "textwrap.py")


@dataclass
class TextCorpus:
    train: numpy.ndarray  # uint8 (N,): the bytes are the tokens (vocabulary 256)
    val: numpy.ndarray  # uint8 (M,)
    name: str

    @property
    def vocab_size(self) -> int:
        return 256


def load_stdlib_text(val_fraction: float = 0.1, limit: int | None = None,
                     folder: str | os.PathLike | None = None) -> TextCorpus:
    """:data:`STDLIB_FILES` from the running interpreter's standard library (``folder``:
    another copy of it) concatenated in that order; the first ``limit`` bytes when given;
    the last ``val_fraction`` of the bytes is the validation text, the rest training text."""
    root = Path(folder if folder is not None else sysconfig.get_paths()["stdlib"])
    parts = []
    for name in STDLIB_FILES:
        try:
            parts.append((root / name).read_bytes())
        except OSError as e:
            raise DataError(f"cannot read the standard-library file {root / name}: "
                            f"{e.strerror or e}") from None
    text = numpy.frombuffer(b"".join(parts), numpy.uint8)
    if limit is not None:
        text = text[:limit]
    n_val = int(len(text) * val_fraction)
    return TextCorpus(text[:len(text) - n_val], text[len(text) - n_val:], "stdlib")


def random_windows(text: numpy.ndarray, batch: int, block: int,
                   rng: numpy.random.Generator) -> tuple[numpy.ndarray, numpy.ndarray]:
    """``batch`` contiguous windows of ``text`` at uniformly random starts: inputs (batch,
    block) and targets, the same windows shifted by one byte, both int64."""
    if len(text) < block + 1:
        raise DataError(f"the text has {len(text)} bytes; windows of {block} need at least "
                        f"{block + 1}")
    starts = rng.integers(0, len(text) - block, size=batch)
    index = starts[:, None] + numpy.arange(block)
    return text[index].astype(numpy.int64), text[index + 1].astype(numpy.int64)


def unigram_bits(text: numpy.ndarray) -> float:
    """The entropy of the byte histogram of ``text`` in bits per byte: the loss of the best
    model that ignores context (the baseline a language model must beat)."""
    counts = numpy.bincount(text, minlength=256).astype(numpy.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * numpy.log2(p)).sum())


def shard(n: int, rank: int, world: int, drop_remainder: bool = False) -> slice:
    """Rank ``rank``'s contiguous part of ``n`` items split among ``world`` processes: the
    parts are disjoint and in rank order. ``drop_remainder``: every part has ``n // world``
    items (the last ``n % world`` are left out: equal batches, whose mean of means is the
    mean); else they cover all ``n``, the first ``n % world`` parts one item longer.
    Data-parallel training splits each global batch of a seeded epoch order this way, so
    rank r of N with batch B reads what one process with batch N·B reads, in N pieces."""
    if drop_remainder:
        size = n // world
        return slice(rank * size, (rank + 1) * size)
    size, extra = divmod(n, world)
    start = rank * size + min(rank, extra)
    return slice(start, start + size + (rank < extra))

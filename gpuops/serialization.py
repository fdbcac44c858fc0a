"""``gpuops.save(obj, path)`` and ``gpuops.load(path)``: state dicts in the safetensors format.

A *state dict* is a flat ``dict`` of ``str`` keys to arrays (NumPy or CuPy) or plain Python
values, as :meth:`gpuops.nn.Module.state_dict`, the optimizers' and the schedulers'
``state_dict()`` give. It is stored in the `safetensors <https://github.com/huggingface/
safetensors>`_ format, written and read here in pure Python/NumPy (no pickle: loading a file
never runs code from it), so the ``safetensors`` package reads these files and this module
reads its files:

* 8 bytes: ``N``, the header length, an unsigned little-endian 64-bit integer;
* ``N`` bytes: a UTF-8 JSON object ``{name: {"dtype": "F32", "shape": [2, 3],
  "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}`` (padded with spaces to
  a multiple of 8 bytes);
* the data: every tensor's bytes, C order, little-endian, at ``[begin, end)`` of this
  buffer; the tensors tile it exactly, without gaps or overlaps.

Arrays of dtype float16/32/64, int32/64, bool and uint8 (of any shape, 0-d included) are
tensors (``F16 F32 F64 I32 I64 BOOL U8``); CuPy arrays are copied to the host, NumPy scalars
(``numpy.float32(1)``) are stored as 0-d tensors and load as 0-d arrays. Any other value goes
into ``__metadata__["gpuops"]``, a JSON text that also lists the keys in their order, with
its type kept: ``int``, ``float`` (nan and ±inf included), ``bool``, ``str``, ``None``, and
lists, tuples and ``str``-keyed dicts of those; NumPy string arrays (the optimizers' ``type``)
keep their dtype and shape. They load back equal and of the same types.
"""
from __future__ import annotations

import json
import math
import os
import secrets
from typing import Any, Mapping

import numpy

from .backend import is_cupy_array, to_gpu

__all__ = ["save", "load"]

# safetensors dtype name <-> NumPy dtype (little-endian)
_DTYPES: dict[str, numpy.dtype[Any]] = {
    "F16": numpy.dtype("<f2"), "F32": numpy.dtype("<f4"), "F64": numpy.dtype("<f8"),
    "I32": numpy.dtype("<i4"), "I64": numpy.dtype("<i8"), "BOOL": numpy.dtype("?"),
    "U8": numpy.dtype("u1"),
}
_NAMES = {dtype.newbyteorder("="): name for name, dtype in _DTYPES.items()}
_METADATA_KEY = "gpuops"        # our entry in "__metadata__"
_FORMAT_VERSION = 1
_MAX_HEADER = 100_000_000       # as the safetensors package: a larger header is an error
_SUPPORTED = "float16, float32, float64, int32, int64, bool, uint8"


# ---- values kept in the metadata ----------------------------------------------------------

def _encode(key: str, value: Any) -> Any:
    """A JSON-able form of a plain value that keeps its type: ``int``, ``float``, ``bool``,
    ``str`` and ``None`` as JSON's own, lists as JSON lists, tuples, dicts and NumPy string
    arrays as one-key objects ``{"tuple": [...]}``, ``{"dict": [[k, v], ...]}``,
    ``{"str_array": {"dtype", "shape", "value"}}``."""
    if value is None or type(value) in (bool, int, str):
        return value
    if type(value) is float:
        if math.isfinite(value):
            return value
        return {"float": repr(value)}  # 'nan', 'inf', '-inf': not JSON numbers
    if type(value) is list:
        return [_encode(key, v) for v in value]
    if type(value) is tuple:
        return {"tuple": [_encode(key, v) for v in value]}
    if type(value) is dict:
        items = []
        for k, v in value.items():
            if type(k) is not str:
                raise TypeError(f"gpuops.save: key {key!r} holds a dict with the non-str key "
                                f"{k!r}; dict keys must be str")
            items.append([k, _encode(key, v)])
        return {"dict": items}
    if isinstance(value, numpy.ndarray) and value.dtype.kind == "U":
        return {"str_array": {"dtype": value.dtype.str, "shape": list(value.shape),
                              "value": value.tolist()}}
    raise TypeError(f"gpuops.save: key {key!r} holds a {type(value).__name__} ({value!r:.60}); "
                    f"a state dict holds arrays of dtype {_SUPPORTED}, or int, float, bool, "
                    f"str, None and lists, tuples or str-keyed dicts of those")


def _decode(where: str, value: Any) -> Any:
    """The inverse of :func:`_encode`; ValueError naming ``where`` on anything else."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) is list:
        return [_decode(where, v) for v in value]
    if type(value) is dict and len(value) == 1:
        (tag, inner), = value.items()
        if tag == "float" and inner in ("nan", "inf", "-inf"):
            return float(inner)
        if tag == "tuple" and type(inner) is list:
            return tuple(_decode(where, v) for v in inner)
        if tag == "dict" and type(inner) is list and all(
                type(item) is list and len(item) == 2 and type(item[0]) is str for item in inner):
            return {k: _decode(where, v) for k, v in inner}
        if tag == "str_array" and type(inner) is dict and set(inner) == {"dtype", "shape",
                                                                         "value"}:
            try:
                dtype = numpy.dtype(inner["dtype"])
                if dtype.kind != "U":
                    raise ValueError(f"dtype {dtype} is not a string dtype")
                array = numpy.array(inner["value"], dtype=dtype)
                if list(array.shape) != inner["shape"]:
                    raise ValueError(f"shape {list(array.shape)} is not {inner['shape']}")
                return array
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}: a bad string array ({e})") from None
    raise ValueError(f"{where}: cannot decode the value {value!r:.80}")


# ---- save ---------------------------------------------------------------------------------

def _as_tensor(key: str, value: Any) -> numpy.ndarray | None:
    """The host little-endian C-order array to store for ``value``, or None (a plain
    value for the metadata); TypeError naming ``key`` for an array of another dtype."""
    if is_cupy_array(value):
        value = value.get()
    elif isinstance(value, numpy.generic) and not isinstance(value, (numpy.str_, numpy.bytes_)):
        value = numpy.asarray(value)
    elif not isinstance(value, numpy.ndarray) or value.dtype.kind == "U":
        return None
    native = value.dtype.newbyteorder("=")
    if native not in _NAMES:
        raise TypeError(f"gpuops.save: key {key!r} is an array of dtype {value.dtype}; "
                        f"supported dtypes: {_SUPPORTED}")
    return numpy.asarray(value, dtype=_DTYPES[_NAMES[native]], order="C")  # 0-d stays 0-d


def _header_and_arrays(obj: Any) -> tuple[bytes, list[numpy.ndarray]]:
    if not isinstance(obj, Mapping):
        raise TypeError(f"gpuops.save: obj must be a dict (a state dict), "
                        f"got {type(obj).__name__}")
    header: dict[str, Any] = {}
    arrays: list[numpy.ndarray] = []
    values: dict[str, Any] = {}
    offset = 0
    for key, value in obj.items():
        if type(key) is not str:
            raise TypeError(f"gpuops.save: keys must be str, got {key!r}")
        if key == "__metadata__":
            raise ValueError("gpuops.save: the key '__metadata__' is reserved by the "
                             "safetensors format")
        array = _as_tensor(key, value)
        if array is None:
            values[key] = _encode(key, value)
            continue
        header[key] = {"dtype": _NAMES[array.dtype.newbyteorder("=")],
                       "shape": list(array.shape),
                       "data_offsets": [offset, offset + array.nbytes]}
        arrays.append(array)
        offset += array.nbytes
    ours = {"version": _FORMAT_VERSION, "keys": list(obj.keys()), "values": values}
    header["__metadata__"] = {_METADATA_KEY: json.dumps(ours, ensure_ascii=False,
                                                        allow_nan=False)}
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes
    return len(text).to_bytes(8, "little") + text, arrays


def save(obj: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write the state dict ``obj`` to ``path`` in the safetensors format.

    Everything is checked before anything is written (TypeError naming the key of a value
    that cannot be stored); the file is written to a temporary file in the same directory
    and moved over ``path`` (``os.replace``), so ``path`` holds the old file or the complete
    new one, never a partial one.
    """
    prefix, arrays = _header_and_arrays(obj)
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    while True:
        temporary = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:  # pragma: no cover - a 48-bit name collision
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(prefix)
            for array in arrays:
                f.write(array.reshape(-1).view(numpy.uint8).data)  # no copy
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


# ---- load ---------------------------------------------------------------------------------

def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, with repeated names an error (not the last one silently kept)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"the name {k!r} appears twice")
        out[k] = v
    return out


def _is_int(x: Any) -> bool:
    return type(x) is int and x >= 0


def load(path: str | os.PathLike, device: str = "cpu") -> dict[str, Any]:
    """Read a state dict written by :func:`save` (or any safetensors file of the supported
    dtypes): arrays as NumPy arrays (``device="cpu"``) or CuPy arrays on the current GPU
    (``device="cuda"``, via :func:`gpuops.to_gpu`), plain values as they were saved, in the
    saved order.

    A file that is not in this format (bad header, truncated data, offsets out of range or
    overlapping, unsupported dtype, bad metadata) raises ValueError naming the path.
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"gpuops.load: device must be 'cpu' or 'cuda', got {device!r}")
    path = os.fspath(path)

    def bad(reason: str) -> ValueError:
        return ValueError(f"gpuops.load: {path!r} is not a valid safetensors state dict: "
                          f"{reason}")

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        first = f.read(8)
        if len(first) < 8:
            raise bad(f"the file has {len(first)} bytes, fewer than the 8 of the header length")
        n = int.from_bytes(first, "little")
        if n > min(size - 8, _MAX_HEADER):
            raise bad(f"the header length {n} exceeds the file ({size} bytes)"
                      if n > size - 8 else f"the header length {n} exceeds {_MAX_HEADER}")
        raw = f.read(n)
        if len(raw) != n:
            raise bad("the file ends inside the header")
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=_pairs)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise bad(f"the header is not UTF-8 JSON ({e})") from None
        if type(header) is not dict:
            raise bad("the header is not a JSON object")
        metadata = header.pop("__metadata__", None)
        if metadata is not None and not (type(metadata) is dict and all(
                type(v) is str for v in metadata.values())):
            raise bad("__metadata__ must be an object of strings")
        data_size = size - 8 - n
        entries = []
        for key, info in header.items():
            if type(info) is not dict or set(info) != {"dtype", "shape", "data_offsets"}:
                raise bad(f"tensor {key!r}: expected an object with exactly dtype, shape and "
                          f"data_offsets, got {info!r:.80}")
            dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
            if type(dtype) is not str or dtype not in _DTYPES:
                raise bad(f"tensor {key!r} has the dtype {dtype!r}; supported: "
                          f"{', '.join(_DTYPES)}")
            if type(shape) is not list or not all(_is_int(d) for d in shape):
                raise bad(f"tensor {key!r} has the shape {shape!r}")
            if type(offsets) is not list or len(offsets) != 2 or not all(
                    _is_int(o) for o in offsets) or not offsets[0] <= offsets[1] <= data_size:
                raise bad(f"tensor {key!r} has the data_offsets {offsets!r}, outside the "
                          f"{data_size} data bytes of the file")
            nbytes = math.prod(shape) * _DTYPES[dtype].itemsize
            if offsets[1] - offsets[0] != nbytes:
                raise bad(f"tensor {key!r} of shape {shape} and dtype {dtype} needs {nbytes} "
                          f"bytes; its data_offsets {offsets} hold {offsets[1] - offsets[0]}")
            entries.append((offsets[0], offsets[1], key, dtype, tuple(shape)))
        entries.sort()
        end = 0
        for begin, stop, key, _, _ in entries:
            if begin != end:
                raise bad(f"tensor {key!r} starts at byte {begin} of the data, expected {end} "
                          f"(the tensors must tile the data without gaps or overlaps)")
            end = stop
        if end != data_size:
            raise bad(f"the file has {data_size} data bytes; the tensors hold {end}")
        arrays: dict[str, numpy.ndarray] = {}
        for begin, stop, key, dtype, shape in entries:
            buffer = bytearray(stop - begin)
            f.seek(8 + n + begin)
            if f.readinto(buffer) != len(buffer):  # the file shrank while being read
                raise bad(f"the file ends inside tensor {key!r}")
            array = numpy.frombuffer(buffer, dtype=_DTYPES[dtype]).reshape(shape)
            if dtype == "BOOL" and array.size and numpy.frombuffer(buffer, numpy.uint8).max() > 1:
                raise bad(f"tensor {key!r} of dtype BOOL holds bytes other than 0 and 1")
            arrays[key] = array.astype(_DTYPES[dtype].newbyteorder("="), copy=False)

    values: dict[str, Any] = {}
    order = [key for _, _, key, _, _ in entries]
    ours = None if metadata is None else metadata.get(_METADATA_KEY)
    if ours is not None:
        where = f"{bad('').args[0]}__metadata__[{_METADATA_KEY!r}]"
        try:
            ours = json.loads(ours, object_pairs_hook=_pairs)
        except (ValueError, RecursionError) as e:
            raise bad(f"__metadata__[{_METADATA_KEY!r}] is not JSON ({e})") from None
        if not (type(ours) is dict and set(ours) == {"version", "keys", "values"}
                and type(ours["keys"]) is list and type(ours["values"]) is dict):
            raise bad(f"__metadata__[{_METADATA_KEY!r}] must be an object with version, "
                      f"keys and values")
        if ours["version"] != _FORMAT_VERSION:
            raise bad(f"__metadata__[{_METADATA_KEY!r}] has the version {ours['version']!r}; "
                      f"this gpuops reads version {_FORMAT_VERSION}")
        try:
            values = {key: _decode(f"{where}: key {key!r}", v)
                      for key, v in ours["values"].items()}
        except RecursionError:
            raise bad("a value is nested too deeply") from None
        order = ours["keys"]
        if not all(type(k) is str for k in order) or len(set(order)) != len(order) or \
                set(order) != set(arrays) | set(values) or set(arrays) & set(values):
            raise bad(f"__metadata__[{_METADATA_KEY!r}] lists the keys {order!r:.200}, not "
                      f"those of the tensors and values in the file")
    out: dict[str, Any] = {}
    for key in order:
        if key in arrays:
            out[key] = to_gpu(arrays[key]) if device == "cuda" else arrays[key]
        else:
            out[key] = values[key]
    return out

"""gpuops.save / gpuops.load: state dicts in the safetensors format (round trips of models,
optimizers and schedulers, exact types, the safetensors package both ways, bad files)."""
from __future__ import annotations

import json
import math
import os
import pickle

import numpy
import pytest

import gpuops
from gpuops import Tensor, nn
from gpuops.optim import SGD, Adam, AdamW, lr_scheduler


def _assert_same(a, b, where="value"):
    """Equal and of the same types, recursively (arrays: same class, dtype, shape, values;
    floats: same bits, nan included)."""
    assert type(a) is type(b), f"{where}: {type(a)} vs {type(b)}"
    if isinstance(a, numpy.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        numpy.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, float):
        assert a == b or (math.isnan(a) and math.isnan(b)), where
        assert math.copysign(1, a) == math.copysign(1, b), where
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    else:
        assert a == b, where


def _round_trip(obj, path):
    gpuops.save(obj, path)
    return gpuops.load(path)


# ---- models and optimizers ----------------------------------------------------------------

def _model(seed):
    nn.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))


def _optimizer(kind, model):
    first, second = model[0].parameters(), model[3].parameters()
    if kind == "SGD":
        return SGD([{"params": first}, {"params": second, "lr": 0.05, "nesterov": True}],
                   lr=0.1, momentum=0.9, weight_decay=0.01)
    return {"Adam": Adam, "AdamW": AdamW}[kind](
        [{"params": first}, {"params": second, "betas": (0.8, 0.95)}], lr=0.01)


def _train(model, opt, rng, steps):
    loss_fn = nn.MSELoss()
    for _ in range(steps):
        x = rng.standard_normal((5, 4)).astype(numpy.float32)
        y = rng.standard_normal((5, 3)).astype(numpy.float32)
        opt.zero_grad()
        loss_fn(model(Tensor(x)), Tensor(y)).backward()
        opt.step()


@pytest.mark.parametrize("kind", ["SGD", "Adam", "AdamW"])
def test_model_and_optimizer_round_trip_continue_training_identically(kind, tmp_path):
    model = _model(1)
    opt = _optimizer(kind, model)
    _train(model, opt, numpy.random.default_rng(0), 3)
    gpuops.save(model.state_dict(), tmp_path / "model.safetensors")
    gpuops.save(opt.state_dict(), str(tmp_path / "optim.safetensors"))
    model_state = gpuops.load(tmp_path / "model.safetensors")
    optim_state = gpuops.load(str(tmp_path / "optim.safetensors"))
    _assert_same(model_state, model.state_dict(), "model")
    _assert_same(optim_state, opt.state_dict(), "optimizer")
    assert model_state["layers.2.calls"].shape == () and model_state["layers.2.calls"] == 3
    assert optim_state["type"].shape == () and str(optim_state["type"]) == kind

    other = _model(2)  # different weights and dropout seeds until loaded
    other_opt = _optimizer(kind, other)
    other.load_state_dict(model_state)
    other_opt.load_state_dict(optim_state)
    other[2].base_seed = model[2].base_seed  # not in state_dict (set at construction)
    _train(model, opt, numpy.random.default_rng(1), 4)
    _train(other, other_opt, numpy.random.default_rng(1), 4)
    for (name, p), q in zip(model.named_parameters(), other.parameters()):
        numpy.testing.assert_array_equal(p.data, q.data, err_msg=name)
    _assert_same(other_opt.state_dict(), opt.state_dict(), "optimizer after training")


def test_scheduler_state_dicts_round_trip(tmp_path):
    params = [Tensor(numpy.ones(3), requires_grad=True)]
    for make in (lambda o: lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
                 lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.5, total_steps=20),
                 lambda o: lr_scheduler.SequentialLR(
                     o, [lr_scheduler.LinearLR(o, start_factor=0.5, total_iters=2),
                         lr_scheduler.CosineAnnealingLR(o, T_max=5)], milestones=[2])):
        opt = SGD(params, lr=0.1, momentum=0.9)
        scheduler = make(opt)
        for _ in range(3):
            opt.step()
            scheduler.step()
        state = scheduler.state_dict()
        _assert_same(_round_trip(state, tmp_path / "s.safetensors"), state,
                     type(scheduler).__name__)


def test_module_on_gpu_and_load_to_cuda(tmp_path):
    if not gpuops.gpu_available():
        pytest.skip("no CUDA GPU")
    import cupy
    rng = numpy.random.default_rng(3)
    host = {"w": rng.standard_normal((3, 4)).astype(numpy.float32),
            "flags": numpy.array([True, False]), "n": 7}
    state = {**host, "w": cupy.asarray(host["w"]), "flags": cupy.asarray(host["flags"])}
    gpuops.save(state, tmp_path / "g.safetensors")  # CuPy arrays are copied to the host
    _assert_same(gpuops.load(tmp_path / "g.safetensors"), host)
    loaded = gpuops.load(tmp_path / "g.safetensors", device="cuda")
    assert isinstance(loaded["w"], cupy.ndarray) and isinstance(loaded["flags"], cupy.ndarray)
    numpy.testing.assert_array_equal(loaded["w"].get(), host["w"])
    numpy.testing.assert_array_equal(loaded["flags"].get(), host["flags"])
    assert loaded["n"] == 7 and type(loaded["n"]) is int
    model = _model(4).to_gpu()
    gpuops.save(model.state_dict(), tmp_path / "m.safetensors")
    other = _model(5).to_gpu()
    other.load_state_dict(gpuops.load(tmp_path / "m.safetensors", device="cuda"))
    for p, q in zip(model.parameters(), other.parameters()):
        numpy.testing.assert_array_equal(p.data.get(), q.data.get())


def test_load_device_must_be_cpu_or_cuda(tmp_path):
    gpuops.save({"a": numpy.ones(2)}, tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match="gpuops.load: device must be 'cpu' or 'cuda', "
                                         "got 'gpu'"):
        gpuops.load(tmp_path / "a.safetensors", device="gpu")
    if not gpuops.gpu_available():
        with pytest.raises(RuntimeError, match="to_gpu"):
            gpuops.load(tmp_path / "a.safetensors", device="cuda")


# ---- values and dtypes --------------------------------------------------------------------

def test_every_supported_value_round_trips_exactly(tmp_path):
    rng = numpy.random.default_rng(0)
    big_endian = rng.standard_normal((2, 3)).astype(">f8")
    state = {
        "f16": rng.standard_normal((2, 3)).astype(numpy.float16),
        "f32": rng.standard_normal(5).astype(numpy.float32),
        "f64": numpy.array([0.0, -0.0, numpy.nan, numpy.inf, -numpy.inf, 1e-310]),
        "i32": numpy.array([[-(2**31), 2**31 - 1]], numpy.int32),
        "i64": numpy.array([-(2**63), 2**63 - 1, 0]),
        "bool": numpy.array([[True, False], [False, True]]),
        "u8": numpy.arange(256, dtype=numpy.uint8).reshape(16, 16),
        "scalar0d": numpy.array(2.5),
        "empty": numpy.zeros((0, 3), numpy.float32),
        "strided": numpy.arange(24, dtype=numpy.int64).reshape(4, 6)[::2, ::-3],
        "fortran": numpy.asfortranarray(rng.standard_normal((3, 2))),
        "big_endian": big_endian,
        "int": 3, "big_int": 2**80, "negative": -12, "float": 0.1, "neg_zero": -0.0,
        "nan": float("nan"), "inf": float("inf"), "ninf": float("-inf"),
        "true": True, "false": False, "none": None, "str": "Adam ∂ — \"quoted\"\n", "": "",
        "list": [1, 2.0, "x", None, True], "tuple": (0.9, 0.999), "empty_tuple": (),
        "nested": [(1, [2, (3,)]), {"a": [1, 2], "b": (None, {"c": float("nan")})}],
        "dict": {"end_step": 4.0, "start_lr": "initial_lr"}, "empty_dict": {},
        "tag_lookalike": {"tuple": [1, 2]},
        "str_array": numpy.array("SGD"),
        "str_matrix": numpy.array([["a", "bcd"], ["", "ef"]], dtype="<U7"),
    }
    loaded = _round_trip(state, tmp_path / "all.safetensors")
    expected = dict(state)
    expected["strided"] = numpy.ascontiguousarray(state["strided"])
    expected["big_endian"] = big_endian.astype("<f8")
    expected["fortran"] = numpy.ascontiguousarray(state["fortran"])
    _assert_same(loaded, expected)
    assert loaded["big_endian"].dtype == numpy.float64
    for key in ("f16", "u8", "strided"):
        assert loaded[key].flags.writeable and loaded[key].flags.c_contiguous


def test_numpy_scalars_are_stored_as_0d_arrays(tmp_path):
    loaded = _round_trip({"a": numpy.float32(1.5), "b": numpy.int64(-3), "c": numpy.bool_(True)},
                         tmp_path / "s.safetensors")
    _assert_same(loaded, {"a": numpy.array(1.5, numpy.float32), "b": numpy.array(-3),
                          "c": numpy.array(True)})


def test_empty_state_dict(tmp_path):
    assert _round_trip({}, tmp_path / "e.safetensors") == {}


@pytest.mark.parametrize("value,what", [
    (numpy.ones(2, numpy.int16), "dtype int16"),
    (numpy.ones(2, numpy.complex64), "dtype complex64"),
    (numpy.ones(2, numpy.uint32), "dtype uint32"),
    (numpy.array([b"ab"]), "dtype |S2"),
    (numpy.array([object()]), "dtype object"),
    (numpy.complex128(1j), "dtype complex128"),
    ({1, 2}, "holds a set"),
    (lambda: 0, "holds a function"),
    ([1, numpy.ones(2)], "holds a ndarray"),
    ({1: "a"}, "non-str key 1"),
    (b"bytes", "holds a bytes"),
    (numpy.str_("x"), "holds a str_"),
])
def test_unsupported_values_raise_type_error_naming_the_key(value, what, tmp_path):
    path = tmp_path / "x.safetensors"
    gpuops.save({"old": numpy.ones(1)}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match=rf"gpuops.save: key 'bad\.key'.*{what}"):
        gpuops.save({"fine": numpy.ones(3), "bad.key": value}, path)
    assert path.read_bytes() == before  # untouched
    assert os.listdir(tmp_path) == ["x.safetensors"]  # no temporary file left


def test_bad_objects_and_keys(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(TypeError, match="gpuops.save: obj must be a dict .*got list"):
        gpuops.save([numpy.ones(2)], path)
    with pytest.raises(TypeError, match="gpuops.save: keys must be str, got 3"):
        gpuops.save({3: numpy.ones(2)}, path)
    with pytest.raises(ValueError, match="'__metadata__' is reserved"):
        gpuops.save({"__metadata__": "x"}, path)
    assert not path.exists() and os.listdir(tmp_path) == []


# ---- atomic write -------------------------------------------------------------------------

def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    gpuops.save({"a": numpy.ones(3)}, path)
    gpuops.save({"a": numpy.zeros(2), "b": 1}, path)  # replaces the file
    _assert_same(gpuops.load(path), {"a": numpy.zeros(2), "b": 1})
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        gpuops.save({"a": numpy.full(1000, 7.0)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]


def test_saved_file_mode_follows_umask(tmp_path):
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    old = os.umask(0o022)
    try:
        gpuops.save({"a": numpy.ones(1)}, tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o644


# ---- the format, and the safetensors package ----------------------------------------------

def _layout(path):
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return n, json.loads(data[8:8 + n]), data[8 + n:]


def test_file_layout(tmp_path):
    path = tmp_path / "l.safetensors"
    gpuops.save({"b": numpy.array([1, 2], numpy.int32), "a": numpy.array(1.5, numpy.float16),
                 "lr": 0.1}, path)
    n, header, data = _layout(path)
    assert n % 8 == 0
    assert header["b"] == {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]}
    assert header["a"] == {"dtype": "F16", "shape": [], "data_offsets": [8, 10]}
    ours = json.loads(header["__metadata__"]["gpuops"])
    assert ours == {"version": 1, "keys": ["b", "a", "lr"], "values": {"lr": 0.1}}
    assert data == numpy.array([1, 2], "<i4").tobytes() + numpy.array(1.5, "<f2").tobytes()


def test_safetensors_package_reads_our_files(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors import safe_open
    from safetensors.numpy import load_file
    rng = numpy.random.default_rng(1)
    model = _model(3)
    opt = _optimizer("Adam", model)
    _train(model, opt, rng, 2)
    state = {**model.state_dict(), **{f"optim.{k}": v for k, v in opt.state_dict().items()},
             "u8": numpy.arange(5, dtype=numpy.uint8), "f16": numpy.ones((2, 2), numpy.float16),
             "i32": numpy.array([-1], numpy.int32), "empty": numpy.zeros((0,)), "epoch": 4}
    path = tmp_path / "ours.safetensors"
    gpuops.save(state, path)
    theirs = load_file(str(path))
    arrays = {k: v for k, v in state.items() if isinstance(v, numpy.ndarray)
              and v.dtype.kind != "U"}
    assert set(theirs) == set(arrays)
    for key, value in arrays.items():
        _assert_same(theirs[key], value, key)
    with safe_open(str(path), framework="np") as f:
        ours = json.loads(f.metadata()["gpuops"])
    assert ours["values"]["epoch"] == 4 and ours["keys"] == list(state)


def test_we_read_safetensors_package_files(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.numpy import save_file
    rng = numpy.random.default_rng(2)
    arrays = {"weight": rng.standard_normal((3, 5)).astype(numpy.float32),
              "bias": rng.standard_normal(5), "half": numpy.ones(3, numpy.float16),
              "count": numpy.array(12), "ids": numpy.array([1, 2], numpy.int32),
              "mask": numpy.array([True, False, True]), "bytes": numpy.arange(7, dtype=numpy.uint8),
              "scalar": numpy.array(0.5, numpy.float32)}
    for metadata in (None, {"format": "np", "note": "made by safetensors"}):
        path = tmp_path / "theirs.safetensors"
        save_file(arrays, str(path), metadata=metadata)
        loaded = gpuops.load(path)
        assert set(loaded) == set(arrays)
        for key, value in arrays.items():
            _assert_same(loaded[key], value, key)
    # and a model state dict saved by the package loads into a model
    model = _model(6)
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    other = _model(7)
    other.load_state_dict(gpuops.load(tmp_path / "model.safetensors"))
    for p, q in zip(model.parameters(), other.parameters()):
        numpy.testing.assert_array_equal(p.data, q.data)


# ---- bad files ----------------------------------------------------------------------------

def _file(header, data=b"", pad=True):
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    if pad:
        text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data


_F32 = numpy.array([1.0, 2.0], numpy.float32).tobytes()
_GOOD = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


def _meta(ours):
    return {**_GOOD, "__metadata__": {"gpuops": json.dumps(ours)}}


_BAD_FILES = {
    "empty": (b"", "fewer than the 8"),
    "short": (b"\x05\x00\x00", "fewer than the 8"),
    "header too long": (_file(_GOOD, _F32)[:8] + b"{}", "exceeds the file"),
    "huge header length": ((2**64 - 1).to_bytes(8, "little") + b"{}", "exceeds the file"),
    "not json": (_file(b"{not json}", b""), "not UTF-8 JSON"),
    "not utf-8": (_file(b'{"\xff": 1}', b""), "not UTF-8 JSON"),
    "json array": (_file([1, 2], b""), "not a JSON object"),
    "pickle": (pickle.dumps({"w": numpy.ones(2)}), "exceeds the file|not UTF-8 JSON"),
    "npz": (b"PK\x03\x04" + b"\x00" * 40, "exceeds the file"),
    "truncated data": (_file(_GOOD, _F32[:-1]), "offsets \\[0, 8\\], outside the 7"),
    "trailing bytes": (_file(_GOOD, _F32 + b"\x00"), "9 data bytes; the tensors hold 8"),
    "offsets beyond": (_file({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}},
                             _F32), "outside the 8 data bytes"),
    "offsets reversed": (_file({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}},
                               _F32), "data_offsets \\[8, 0\\]"),
    "negative offset": (_file({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}},
                              _F32), "data_offsets \\[-8, 0\\]"),
    "overlap": (_file({**_GOOD, "v": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}},
                      _F32), "starts at byte 4 of the data, expected 8"),
    "gap": (_file({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, _F32),
            "starts at byte 4 of the data, expected 0"),
    "size vs shape": (_file({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
                            _F32), "needs 12 bytes"),
    "huge shape": (_file({"w": {"dtype": "F64", "shape": [2**40, 2**40],
                                "data_offsets": [0, 8]}}, _F32), "needs"),
    "bf16": (_file({"w": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}}, _F32),
             "dtype 'BF16'"),
    "dtype not a string": (_file({"w": {"dtype": 3, "shape": [2], "data_offsets": [0, 8]}},
                                 _F32), "dtype 3"),
    "negative dim": (_file({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}},
                           _F32), "shape \\[-2\\]"),
    "bool dim": (_file({"w": {"dtype": "F32", "shape": [True, 2], "data_offsets": [0, 8]}},
                       _F32), "shape \\[True, 2\\]"),
    "missing field": (_file({"w": {"dtype": "F32", "shape": [2]}}, _F32), "exactly dtype"),
    "extra field": (_file({"w": {**_GOOD["w"], "code": "import os"}}, _F32), "exactly dtype"),
    "entry not an object": (_file({"w": [1]}, _F32), "exactly dtype"),
    "duplicate key": (_file(b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
                            b'"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}',
                            _F32), "appears twice"),
    "bool byte 2": (_file({"m": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}},
                          b"\x01\x02"), "bytes other than 0 and 1"),
    "metadata not strings": (_file({**_GOOD, "__metadata__": {"gpuops": 1}}, _F32),
                             "__metadata__ must be an object of strings"),
    "metadata a list": (_file({**_GOOD, "__metadata__": ["x"]}, _F32),
                        "__metadata__ must be an object of strings"),
    "ours not json": (_file({**_GOOD, "__metadata__": {"gpuops": "{"}}, _F32),
                      "'gpuops'\\] is not JSON"),
    "ours wrong shape": (_file(_meta({"version": 1, "keys": ["w"]}), _F32),
                         "with version, keys and values"),
    "ours other version": (_file(_meta({"version": 2, "keys": ["w"], "values": {}}), _F32),
                           "the version 2"),
    "ours missing key": (_file(_meta({"version": 1, "keys": [], "values": {}}), _F32),
                         "lists the keys \\[\\]"),
    "ours extra key": (_file(_meta({"version": 1, "keys": ["w", "x"], "values": {}}), _F32),
                       "lists the keys"),
    "ours duplicate key": (_file(_meta({"version": 1, "keys": ["w", "w"], "values": {}}), _F32),
                           "lists the keys"),
    "ours value shadows tensor": (_file(_meta({"version": 1, "keys": ["w"],
                                               "values": {"w": 1}}), _F32), "lists the keys"),
    "ours bad tag": (_file(_meta({"version": 1, "keys": ["w", "x"],
                                  "values": {"x": {"pickle": "cos\nsystem\n"}}}), _F32),
                     "cannot decode"),
    "ours bad float tag": (_file(_meta({"version": 1, "keys": ["w", "x"],
                                        "values": {"x": {"float": "1e999"}}}), _F32),
                           "cannot decode"),
    "ours bad str array": (_file(_meta({"version": 1, "keys": ["w", "x"], "values": {"x": {
        "str_array": {"dtype": "O", "shape": [], "value": "x"}}}}), _F32), "bad string array"),
    "ours str array shape": (_file(_meta({"version": 1, "keys": ["w", "x"], "values": {"x": {
        "str_array": {"dtype": "<U2", "shape": [3], "value": "x"}}}}), _F32),
        "bad string array"),
    "ours deep nesting": (_file({**_GOOD, "__metadata__": {"gpuops": (
        '{"version": 1, "keys": ["w", "x"], "values": {"x": ' + "[" * 100000 + "]" * 100000
        + "}}")}}, _F32), "'gpuops'\\] is not JSON"),
    "ours nesting too deep to decode": (_file({**_GOOD, "__metadata__": {"gpuops": (
        '{"version": 1, "keys": ["w", "x"], "values": {"x": ' + '{"tuple": [' * 700
        + "]}" * 700 + "}}")}}, _F32), "nested too deeply|is not JSON"),
    "dtype a list": (_file({"w": {"dtype": ["F32"], "shape": [2], "data_offsets": [0, 8]}},
                           _F32), "dtype \\['F32'\\]"),
}


@pytest.mark.parametrize("name", list(_BAD_FILES))
def test_bad_files_raise_value_error_naming_the_path(name, tmp_path):
    content, message = _BAD_FILES[name]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        gpuops.load(path)
    assert str(path) in str(info.value) and "not a valid safetensors state dict" in str(info.value)


def test_loading_never_unpickles(tmp_path):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"w": Exploit()}))
    with pytest.raises(ValueError, match="not a valid safetensors state dict"):
        gpuops.load(path)
    assert not marker.exists()


def test_every_truncation_of_a_good_file_is_a_value_error(tmp_path):
    good = tmp_path / "good.safetensors"
    gpuops.save({"a": numpy.arange(3, dtype=numpy.int64), "t": numpy.array("SGD"), "lr": 0.1,
                 "b": numpy.array([True])}, good)
    content = good.read_bytes()
    bad = tmp_path / "cut.safetensors"
    for n in range(len(content)):
        bad.write_bytes(content[:n])
        with pytest.raises(ValueError, match="not a valid safetensors state dict"):
            gpuops.load(bad)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        gpuops.load(tmp_path / "nothing.safetensors")


def test_random_corruptions_load_or_raise_value_error(tmp_path):
    """Bounded fuzzing: a good file with 1 to 3 bytes changed either loads or raises
    ValueError, never another exception."""
    good = tmp_path / "good.safetensors"
    gpuops.save({"a": numpy.arange(3, dtype=numpy.int64), "t": numpy.array("SGD"), "lr": 0.1,
                 "nested": (1, [2.0, None], {"k": "v"}), "b": numpy.array([True, False]),
                 "h": numpy.ones((2, 2), numpy.float16)}, good)
    content = good.read_bytes()
    rng = numpy.random.default_rng(0)
    syntax = b'{}[]",:0123456789 -.e'
    bad = tmp_path / "mutated.safetensors"
    outcomes = {"loaded": 0, "ValueError": 0}
    for _ in range(400):
        mutated = bytearray(content)
        for _ in range(rng.integers(1, 4)):
            j = int(rng.integers(0, len(mutated)))
            mutated[j] = int(rng.integers(0, 256)) if rng.random() < 0.7 else \
                syntax[int(rng.integers(0, len(syntax)))]
        bad.write_bytes(bytes(mutated))
        try:
            gpuops.load(bad)
            outcomes["loaded"] += 1
        except ValueError as e:
            assert str(bad) in str(e)
            outcomes["ValueError"] += 1
    assert outcomes["ValueError"] > 300


def test_cupy_paths_without_a_gpu(tmp_path, monkeypatch):
    """The CuPy wiring, with stand-ins: a CuPy array is saved through ``.get()``, and
    ``device="cuda"`` passes every array (not the plain values) through gpuops.to_gpu."""
    class ndarray:  # noqa: N801 - looks like cupy.ndarray to gpuops.backend.is_cupy_array
        __module__ = "cupy"

        def __init__(self, host):
            self.host = host

        def get(self):
            return self.host.copy()

    path = tmp_path / "fake.safetensors"
    host = numpy.arange(6, dtype=numpy.float32).reshape(2, 3)
    gpuops.save({"w": ndarray(host), "n": 2}, path)
    _assert_same(gpuops.load(path), {"w": host, "n": 2})
    import gpuops.serialization as serialization
    monkeypatch.setattr(serialization, "to_gpu", ndarray)
    loaded = gpuops.load(path, device="cuda")
    assert type(loaded["w"]) is ndarray and loaded["n"] == 2
    numpy.testing.assert_array_equal(loaded["w"].host, host)

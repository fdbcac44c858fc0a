"""The Tensor API beyond the operators: NumPy conversion, clone/astype/to, argmax, shape
methods, scalar ** tensor, indexing with its gradient (repeated indices summed without
atomics), in-place updates, foreign operands. Forward values against NumPy; gradients against
the closed forms here and by finite differences in test_autograd.py (CASES)."""
from __future__ import annotations

import math

import numpy
import pytest

import gpuops
from gpuops import Tensor, no_grad
from gpuops.autograd import _scatter_sum, _segment_sum
from backends import BACKENDS

ids = lambda b: b.name  # noqa: E731


# ---- conversion -----------------------------------------------------------------

def test_asarray_gives_the_data_without_a_copy():
    t = Tensor(numpy.arange(6.0).reshape(2, 3), requires_grad=True)
    a = numpy.asarray(t)
    assert a is t.data
    assert numpy.array(t, dtype=numpy.float32).dtype == numpy.float32
    c = numpy.array(t, copy=True)
    c[0, 0] = 9.0
    assert t.data[0, 0] == 0.0
    with pytest.raises(ValueError, match="copy=False"):
        numpy.asarray(t, dtype=numpy.float32, copy=False)
    # a list of tensors goes through __array__
    numpy.testing.assert_array_equal(numpy.stack([t, t]), numpy.stack([t.data, t.data]))


def test_numpy_operands_still_defer_to_tensor():
    t = Tensor(numpy.ones(3), requires_grad=True)
    for y in (numpy.ones(3) + t, numpy.ones(3) * t, numpy.float64(2.0) - t):
        assert isinstance(y, Tensor) and y.requires_grad


@pytest.mark.skipif(not gpuops.gpu_available(), reason="needs a CUDA GPU")
def test_asarray_of_gpu_data_is_refused_like_cupy():
    t = Tensor(numpy.ones(3)).to_gpu()
    with pytest.raises(TypeError, match=r"\.get\(\)"):
        numpy.asarray(t)
    assert t.tolist() == [1.0, 1.0, 1.0]


def test_tolist():
    x = numpy.arange(6.0).reshape(2, 3)
    assert Tensor(x).tolist() == x.tolist()
    assert Tensor(numpy.float64(2.5)).tolist() == 2.5
    assert Tensor(numpy.arange(3)).tolist() == [0, 1, 2]


def test_clone_is_an_independent_differentiable_copy():
    x = Tensor(numpy.arange(3.0), requires_grad=True)
    y = x.clone()
    assert y.data is not x.data and y.creator is not None
    y.data[0] = 5.0
    assert x.data[0] == 0.0
    (y * y).backward(numpy.ones(3))
    numpy.testing.assert_array_equal(x.grad, 2 * y.data)
    with no_grad():
        assert x.clone().creator is None
    assert Tensor(numpy.arange(3)).clone().dtype == numpy.arange(3).dtype


@pytest.mark.parametrize("backend", BACKENDS, ids=ids)
def test_astype_casts_the_gradient_back(backend):
    with backend.active():
        x = Tensor(backend.asarray([0.1, 0.2, 0.3]), requires_grad=True)
        y = x.astype(numpy.float32)
        assert y.dtype == numpy.float32 and y.creator is not None
        (y * y).backward(backend.asarray(numpy.ones(3), dtype=numpy.float32))
        assert x.grad.dtype == numpy.float64
        expected = 2 * numpy.array([0.1, 0.2, 0.3], dtype=numpy.float32)
        numpy.testing.assert_allclose(backend.to_numpy(x.grad), expected, rtol=1e-6)
        z = x.to("float16")
        assert z.dtype == numpy.float16 and z.requires_grad
        assert x.to(numpy.float64) is x
        assert x.astype(numpy.float64) is not x


def test_astype_to_integers_has_no_gradient_and_bad_dtypes_are_named():
    x = Tensor(numpy.array([1.7, -2.2]), requires_grad=True)
    i = x.astype(numpy.int64)
    assert not i.requires_grad and i.tolist() == [1, -2]
    with pytest.raises(TypeError, match="Tensor.to: dtype .*'cuda'.*to_gpu"):
        x.to("cuda")
    with pytest.raises(TypeError, match="Tensor.astype: dtype"):
        x.astype("no_such_type")


def test_argmax_matches_numpy():
    rng = numpy.random.default_rng(0)
    x = rng.integers(0, 4, (3, 5, 2)).astype(numpy.float64)  # ties: the first index wins
    t = Tensor(x, requires_grad=True)
    r = t.argmax()
    assert r.dtype == numpy.int64 and r.shape == () and not r.requires_grad
    assert r.item() == numpy.argmax(x)
    for axis in (0, 1, -1):
        for keepdims in (False, True):
            got = t.argmax(axis=axis, keepdims=keepdims)
            numpy.testing.assert_array_equal(got.numpy(),
                                              numpy.argmax(x, axis=axis, keepdims=keepdims))
    assert t.argmax(keepdims=True).shape == (1, 1, 1)


def test_argmax_matches_torch():
    torch = pytest.importorskip("torch")
    x = numpy.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])
    assert Tensor(x).argmax().item() == torch.tensor(x).argmax().item()
    numpy.testing.assert_array_equal(Tensor(x).argmax(axis=1).numpy(),
                                     torch.tensor(x).argmax(dim=1).numpy())


# ---- shape methods ------------------------------------------------------------------

def test_permute_unsqueeze_squeeze_view_match_numpy():
    x = numpy.arange(24.0).reshape(2, 1, 3, 4)
    t = Tensor(x, requires_grad=True)
    numpy.testing.assert_array_equal(t.permute(3, 0, 2, 1).numpy(), x.transpose(3, 0, 2, 1))
    numpy.testing.assert_array_equal(t.permute((-1, 0, 1, 2)).numpy(), x.transpose(3, 0, 1, 2))
    for d in (0, 2, 4, -1, -5):
        numpy.testing.assert_array_equal(t.unsqueeze(d).numpy(), numpy.expand_dims(x, d))
    assert t.squeeze().shape == (2, 3, 4)
    assert t.squeeze(1).shape == (2, 3, 4)
    assert t.squeeze(0).shape == (2, 1, 3, 4)  # size 2: kept, as in PyTorch
    assert t.squeeze((0, 1, -1)).shape == (2, 3, 4)
    assert Tensor(numpy.float64(1.0)).squeeze(0).shape == ()
    numpy.testing.assert_array_equal(t.view(6, -1).numpy(), x.reshape(6, -1))
    numpy.testing.assert_array_equal(t.view((4, 6)).numpy(), x.reshape(4, 6))


def test_shape_method_errors():
    t = Tensor(numpy.ones((2, 3)))
    with pytest.raises(IndexError, match=r"unsqueeze: dimension out of range.*\[-3, 2\].*got 3"):
        t.unsqueeze(3)
    with pytest.raises(IndexError, match=r"squeeze: dimension out of range.*got -3"):
        t.squeeze(-3)
    with pytest.raises(TypeError, match="dim must be an int"):
        t.unsqueeze(1.0)
    with pytest.raises(ValueError, match="transpose: axes .* not a permutation"):
        t.permute(0, 0)


def test_shape_methods_match_torch():
    torch = pytest.importorskip("torch")
    x = numpy.arange(6.0).reshape(1, 2, 1, 3)
    for name, args in (("squeeze", ()), ("squeeze", (0,)), ("squeeze", (1,)),
                       ("unsqueeze", (-1,)), ("unsqueeze", (2,)), ("permute", (3, 1, 0, 2))):
        ours = getattr(Tensor(x), name)(*args).numpy()
        theirs = getattr(torch.tensor(x), name)(*args).numpy()
        numpy.testing.assert_array_equal(ours, theirs)


# ---- scalar arithmetic -----------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS, ids=ids)
def test_reflected_scalar_operators_forward(backend):
    x = numpy.array([0.5, 1.0, 2.0, 3.0])
    with backend.active():
        t = Tensor(backend.asarray(x))
        for got, expected in ((2 - t, 2 - x), (1.5 - t, 1.5 - x), (3 / t, 3 / x),
                              (0.5 / t, 0.5 / x), (2 ** t, 2.0 ** x), (0.25 ** t, 0.25 ** x),
                              (1 ** t, numpy.ones(4)), (0 ** t, 0.0 ** x)):
            assert isinstance(got, Tensor) and got.dtype == numpy.float64
            numpy.testing.assert_allclose(backend.to_numpy(got.data), expected, rtol=1e-14)


def test_rpow_gradient_closed_form_and_edges():
    x = numpy.array([-1.0, 0.0, 0.5, 2.0])
    t = Tensor(x, requires_grad=True)
    (3.0 ** t).backward(numpy.ones(4))
    numpy.testing.assert_allclose(t.grad, math.log(3.0) * 3.0 ** x, rtol=1e-14)
    t.grad = None
    (0.0 ** t).backward(numpy.ones(4))  # PyTorch: 0 where base 0 and x >= 0
    assert t.grad[0] == -math.inf and (t.grad[1:] == 0).all()
    t.grad = None
    with numpy.errstate(invalid="ignore"):
        y = (-2.0) ** t
    numpy.testing.assert_array_equal(y.numpy(), [-0.5, 1.0, numpy.nan, 4.0])
    y.backward(numpy.ones(4))
    assert numpy.isnan(t.grad).all()  # log of a negative base
    i = 2 ** Tensor(numpy.arange(4))
    assert i.dtype.kind == "i" and i.tolist() == [1, 2, 4, 8]
    with pytest.raises(TypeError):
        "2" ** t


def test_rpow_matches_torch():
    torch = pytest.importorskip("torch")
    x = numpy.array([-1.0, 0.0, 0.5, 2.0])
    for base in (3.0, 0.5, 1.0, 0.0, -2.0):
        t = Tensor(x, requires_grad=True)
        tt = torch.tensor(x, requires_grad=True)
        y, yt = base ** t, base ** tt
        numpy.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-14)
        y.backward(numpy.ones(4))
        yt.backward(torch.ones(4, dtype=torch.float64))
        numpy.testing.assert_allclose(t.grad, tt.grad.numpy(), rtol=1e-14)


# ---- indexing -----------------------------------------------------------------------

KEYS = [
    1, -1, (0, 2), slice(1, None), (slice(None), None, 1), (Ellipsis, 0), (0, Ellipsis, None),
    (slice(None, None, -1), slice(1, 3)), [0, 2, 0], ([1, 1, 0], [3, 3, 3]),
    (slice(None), [2, 0, 2, 2]), numpy.array([[0, 1], [1, 1]]), (numpy.array([1, 2]), Ellipsis),
    numpy.array([True, False, True]), numpy.array([[True, False, True, False]] * 3),
    (numpy.array([2, 2]), slice(None), numpy.array([4, 4])),
]


def _reference_gradient(shape, key, gy):
    g = numpy.zeros(shape)
    numpy.add.at(g, key, gy)
    return g


@pytest.mark.parametrize("backend", BACKENDS, ids=ids)
@pytest.mark.parametrize("k", range(len(KEYS)))
def test_getitem_forward_and_gradient_match_numpy(backend, k):
    key = KEYS[k]
    shape = (3, 4, 5) if isinstance(key, tuple) and len(key) == 3 else (3, 4)
    rng = numpy.random.default_rng(k)
    x = rng.standard_normal(shape)
    with backend.active():
        t = Tensor(backend.asarray(x), requires_grad=True)
        y = t[key]
        expected = numpy.asarray(x[key])
        assert y.shape == expected.shape and y.creator is not None
        numpy.testing.assert_array_equal(backend.to_numpy(y.data), expected)
        gy = rng.standard_normal(expected.shape)
        y.backward(backend.asarray(gy))
        numpy.testing.assert_allclose(backend.to_numpy(t.grad),
                                      _reference_gradient(shape, key, gy), rtol=1e-14)


def test_getitem_repeated_indices_sum():
    t = Tensor(numpy.zeros(3), requires_grad=True)
    t[[2, 0, 2, 2, 1, 2]].backward(numpy.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0]))
    numpy.testing.assert_array_equal(t.grad, [2.0, 16.0, 45.0])


def test_getitem_with_tensor_keys_and_without_gradient():
    x = numpy.arange(12.0).reshape(3, 4)
    t = Tensor(x, requires_grad=True)
    numpy.testing.assert_array_equal(t[t > 5.0].numpy(), x[x > 5.0])
    numpy.testing.assert_array_equal(t[Tensor(numpy.array([2, 0]))].numpy(), x[[2, 0]])
    with no_grad():
        assert t[0].creator is None
    s = Tensor(x)[1, 2]
    assert isinstance(s.data, numpy.ndarray) and s.shape == () and s.item() == 6.0
    assert [row.tolist() for row in Tensor(x)] == x.tolist()  # iteration through __getitem__
    with pytest.raises(IndexError):
        t[3]
    with pytest.raises(TypeError, match="0-d"):
        list(Tensor(numpy.float64(1.0)))


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_sorted_segment_sum_matches_add_at(dtype):
    """The CuPy path of the indexing gradient (sort + segmented scan, no atomics), run on NumPy:
    every multiplicity from 1 to 1000, repeatable bit for bit."""
    rng = numpy.random.default_rng(5)
    index = numpy.concatenate([numpy.full(m, m) for m in (1, 2, 3, 7, 64, 1000)] +
                              [rng.integers(0, 1001, 500)])
    rng.shuffle(index)
    values = rng.standard_normal(index.size).astype(dtype)
    expected = numpy.zeros(1001)
    numpy.add.at(expected, index, values.astype(numpy.float64))
    got = _segment_sum(numpy, index, values, 1001)
    assert got.dtype == dtype
    tol = 1e-5 if dtype == numpy.float32 else 1e-12
    numpy.testing.assert_allclose(got, expected, rtol=tol, atol=tol * 10)
    numpy.testing.assert_array_equal(got, _segment_sum(numpy, index, values, 1001))
    assert _segment_sum(numpy, index[:0], values[:0], 4).tolist() == [0.0] * 4


@pytest.mark.parametrize("k", range(len(KEYS)))
def test_scatter_sum_matches_add_at(k):
    key = KEYS[k]
    shape = (3, 4, 5) if isinstance(key, tuple) and len(key) == 3 else (3, 4)
    rng = numpy.random.default_rng(k)
    gy = rng.standard_normal(numpy.zeros(shape)[key].shape)
    numpy.testing.assert_allclose(_scatter_sum(numpy, shape, key if isinstance(key, tuple)
                                               else (key,), gy),
                                  _reference_gradient(shape, key, gy), rtol=1e-14)


def test_getitem_gradient_matches_torch():
    torch = pytest.importorskip("torch")
    x = numpy.random.default_rng(2).standard_normal((4, 3))
    idx = numpy.array([3, 0, 3, 3, 1])
    t, tt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    (t[idx, 1:] * t[idx, 1:]).sum().backward()
    (tt[torch.tensor(idx), 1:] ** 2).sum().backward()
    numpy.testing.assert_allclose(t.grad, tt.grad.numpy(), rtol=1e-14)


# ---- in-place updates -----------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS, ids=ids)
def test_inplace_under_no_grad_updates_the_data(backend):
    with backend.active():
        w = Tensor(backend.asarray([1.0, 2.0, 3.0]), requires_grad=True)
        data = w.data
        (w * w).sum().backward()
        with no_grad():
            w -= 0.1 * Tensor(w.grad)
            w += 1.0
            w *= backend.asarray([2.0, 2.0, 2.0])
            w /= 4
        assert w.data is data and w.requires_grad and w.is_leaf
        expected = (numpy.array([1.0, 2.0, 3.0]) * 0.8 + 1.0) * 2.0 / 4
        numpy.testing.assert_allclose(backend.to_numpy(w.data), expected, rtol=1e-15)


def test_inplace_on_a_leaf_that_requires_grad_is_an_error():
    w = Tensor(numpy.ones(3), requires_grad=True)
    for update in ("+=", "-=", "*=", "/="):
        with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being "
                                               "used in an in-place operation"):
            exec(f"w {update} 2.0")
    numpy.testing.assert_array_equal(w.data, numpy.ones(3))


def test_inplace_on_tensors_without_gradient_and_other_dtypes():
    c = Tensor(numpy.ones(3))
    data = c.data
    c += Tensor(numpy.arange(3.0))
    c *= 2
    assert c.data is data and c.tolist() == [2.0, 4.0, 6.0]
    f = Tensor(numpy.ones(2, numpy.float32))
    f -= numpy.array([0.5, 0.25])  # float64 operand: same-kind cast, as NumPy's a -= b
    assert f.dtype == numpy.float32 and f.tolist() == [0.5, 0.75]
    i = Tensor(numpy.arange(3))
    i += 1
    assert i.tolist() == [1, 2, 3]
    with pytest.raises(TypeError):
        i /= 2  # true division of an int tensor cannot be written in place (as PyTorch)
    with pytest.raises(ValueError, match="out has shape"):
        c += numpy.ones((2, 3))  # the broadcast result is larger than the tensor


def test_inplace_on_a_non_leaf_records_out_of_place():
    x = Tensor(numpy.array([1.0, 2.0]), requires_grad=True)
    y = x * x
    before = y
    y += x  # y is a new node: x² + x
    y *= 3.0
    assert y is not before and before.tolist() == [1.0, 4.0]
    y.backward(numpy.ones(2))
    numpy.testing.assert_allclose(x.grad, 3 * (2 * x.data + 1))


def test_manual_sgd_loop():
    rng = numpy.random.default_rng(0)
    X = rng.standard_normal((32, 3))
    true_w = numpy.array([[1.0], [-2.0], [0.5]])
    Y = X @ true_w
    w = Tensor(numpy.zeros((3, 1)), requires_grad=True)
    for _ in range(200):
        loss = ((Tensor(X) @ w - Tensor(Y)) ** 2).mean()
        w.grad = None
        loss.backward()
        with no_grad():
            w -= 0.1 * w.grad
    numpy.testing.assert_allclose(w.data, true_w, atol=1e-6)


# ---- foreign operands --------------------------------------------------------------------

class _Producer:
    """A minimal DLPack producer (not NumPy, CuPy or a Tensor)."""

    def __init__(self, a):
        self.a = a

    def __dlpack__(self, **kwargs):
        return self.a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


def test_tensor_takes_any_dlpack_producer_without_a_copy():
    a = numpy.arange(4.0)
    t = Tensor(_Producer(a))
    a[0] = 7.0
    assert t.data[0] == 7.0
    assert gpuops.from_dlpack(_Producer(a), requires_grad=True).requires_grad


def test_foreign_operands_name_from_dlpack():
    t = Tensor(numpy.ones(3), requires_grad=True)
    for op in (lambda o: t + o, lambda o: o * t, lambda o: t @ o, lambda o: t - o):
        with pytest.raises(TypeError, match=r"_Producer; .*gpuops\.from_dlpack\(x\)"):
            op(_Producer(numpy.ones(3)))
        with pytest.raises(TypeError, match=r"got a list; .*numpy\.asarray\(x\)"):
            op([1.0, 2.0, 3.0])
    c = Tensor(numpy.ones(3))
    with pytest.raises(TypeError, match="Tensor \\+=: got a .*_Producer.*from_dlpack"):
        c += _Producer(numpy.ones(3))
    with pytest.raises(TypeError):
        t + "a"  # not an array: Python's own message


def test_torch_tensors_through_from_dlpack():
    torch = pytest.importorskip("torch")
    source = torch.arange(3, dtype=torch.float64)
    t = Tensor(source)  # shared, no copy
    source[0] = 5.0
    assert t.data[0] == 5.0
    x = Tensor(numpy.ones(3), requires_grad=True)
    with pytest.raises(TypeError, match="torch.Tensor; .*gpuops.from_dlpack"):
        x + source
    with pytest.raises(TypeError, match="torch.Tensor; .*gpuops.from_dlpack"):
        source + x  # torch does not take over through __array__
    y = x + gpuops.from_dlpack(source)
    numpy.testing.assert_array_equal(y.numpy(), [6.0, 2.0, 3.0])

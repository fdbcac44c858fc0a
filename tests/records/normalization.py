"""OpInfo records of the normalization family (float64 references: explicit loops over the
channels or rows). batch_norm: training mode (evaluation mode, running_mean=/running_var=,
is in tests/ops/test_batchnorm.py). layer_norm, rms_norm: rows of the last axis (long rows,
torch and the kernels' row geometries: tests/ops/test_layer_norm.py)."""
from __future__ import annotations

import numpy

from opinfo import BF16, F16, F32, F64, ErrorInput, OpInfo, Sample

# (shape, params): NCHW, NC, NCL; channels last (axis=-1), first (axis=0), in the middle;
# a per-channel count past the kernels' chunk (split reductions); one value per channel;
# an empty batch; a large common offset (the variance must not cancel away).
CASES = [
    ((2, 3, 4, 5), {}, 0.0),
    ((6, 4), {}, 0.0),
    ((3, 5, 7), {"eps": 1e-3}, 0.0),
    ((5, 2, 3), {"axis": -1}, 0.0),
    ((4, 3), {"axis": 0}, 0.0),
    ((2, 3, 4, 2), {"axis": 2, "eps": 0.1}, 0.0),
    ((4, 3, 700), {}, 0.0),
    ((1, 3), {}, 0.0),
    ((0, 3, 2), {}, 0.0),
    ((3, 2, 6), {}, 1000.0),
]


def _channels(x, axis):
    """x as (C, M): channel c's values in a row."""
    return numpy.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)


def _back(rows, shape, axis):
    moved = (shape[axis],) + tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    return numpy.moveaxis(rows.reshape(moved), 0, axis)


def _stats(x, axis, eps):
    rows = _channels(x, axis)
    C, M = rows.shape
    out = []
    for c in range(C):
        if M == 0:
            out.append((0.0, 1.0))
            continue
        mu = sum(rows[c]) / M
        var = sum((v - mu) ** 2 for v in rows[c]) / M
        out.append((mu, numpy.sqrt(var + eps)))
    return rows, out


def _ref(x, w, b, axis=1, eps=1e-5):
    rows, stats = _stats(x, axis, eps)
    y = numpy.empty_like(rows)
    for c, (mu, sigma) in enumerate(stats):
        y[c] = (rows[c] - mu) / sigma * w[c] + b[c]
    return _back(y, x.shape, axis)


def _grad_x(x, w, b, y, gy, axis=1, eps=1e-5):
    """Σ_j gy_j ∂y_j/∂x_i per channel, with ∂y_j/∂x_i = w/σ (δ_ij - 1/M - x̂_i x̂_j / M)."""
    rows, stats = _stats(x, axis, eps)
    g = _channels(gy, axis)
    out = numpy.empty_like(rows)
    M = rows.shape[1]
    if M == 0:
        return numpy.empty_like(x)
    for c, (mu, sigma) in enumerate(stats):
        xhat = (rows[c] - mu) / sigma
        jac = w[c] / sigma * (numpy.eye(M) - 1.0 / M - numpy.outer(xhat, xhat) / M)
        out[c] = jac.T @ g[c]
    return _back(out, x.shape, axis)


def _grad_w(x, w, b, y, gy, axis=1, eps=1e-5):
    """Σ gy x̂ per channel (0 for an empty batch)."""
    rows, stats = _stats(x, axis, eps)
    g = _channels(gy, axis)
    if rows.shape[1] == 0:
        return numpy.zeros(rows.shape[0])
    return numpy.array([sum(g[c] * (rows[c] - mu) / sigma) for c, (mu, sigma) in enumerate(stats)])


def _grad_b(x, w, b, y, gy, axis=1, eps=1e-5):
    g = _channels(gy, axis)
    return numpy.array([sum(g[c], 0.0) for c in range(g.shape[0])])


def _samples(rng):
    for shape, params, offset in CASES:
        C = shape[params.get("axis", 1)]
        x = offset + 2 * rng.standard_normal(shape)
        w = rng.uniform(0.5, 1.5, C) * rng.choice([-1.0, 1.0], C)
        b = rng.standard_normal(C)
        name = f"{'x'.join(map(str, shape))}-{params}" + (f"-offset{offset:g}" if offset else "")
        yield Sample((x, w, b), dict(params), name)


def _errors(rng):
    x = rng.standard_normal((2, 3, 4, 5))  # the first sample's shape
    w, b = numpy.ones(3), numpy.zeros(3)
    yield ErrorInput((x, w, b), {"axis": 4}, ValueError, "axis 4 is out of range .* 4 dims")
    yield ErrorInput((x, w, b), {"axis": -5}, ValueError, "axis -5 is out of range")
    yield ErrorInput((x, w, b), {"axis": 1.0}, TypeError, "axis must be an int, got 1.0")
    yield ErrorInput((x, numpy.ones(4), b), {}, ValueError,
                     r"x2 \(weight\) has shape \(4,\); expected \(3,\)")
    yield ErrorInput((x, w, numpy.zeros((3, 1))), {}, ValueError,
                     r"x3 \(bias\) has shape \(3, 1\); expected \(3,\)")
    yield ErrorInput((x, w, b), {"axis": 2}, ValueError, r"x2 \(weight\) has shape \(3,\); "
                     r"expected \(4,\)")
    yield ErrorInput((x, w, b), {"eps": 0.0}, ValueError, "eps must be > 0, got 0.0")
    yield ErrorInput((x, w, b), {"eps": -1e-5}, ValueError, "eps must be > 0, got -1e-05")
    yield ErrorInput((x, w, b), {"eps": float("nan")}, ValueError, "eps must be finite, got nan")
    yield ErrorInput((x, w, b), {"eps": float("inf")}, ValueError, "eps must be finite, got inf")
    yield ErrorInput((x, w, b), {"eps": "1e-5"}, TypeError, "eps must be .*, got '1e-5'")
    yield ErrorInput((x, w, b), {"eps": None}, TypeError, "eps must be .*, got None")
    yield ErrorInput((x, w, b), {"running_mean": None, "running_var": numpy.ones(3)}, ValueError,
                     "running_var is given without running_mean")
    yield ErrorInput((x[0, 0, 0, 0, ...], w, b), {}, ValueError, "axis 1 is out of range .* 0 dims")
    for k in (1, 2, 3):
        yield ErrorInput((x, w, b), {"eps": 0}, ValueError, "eps must be > 0, got 0", fn=k)
        yield ErrorInput((x, w, numpy.zeros(2)), {}, ValueError,
                         r"x3 \(bias\) has shape \(2,\)", fn=k)
        yield ErrorInput((x, w, b), {"axis": 7}, ValueError, "axis 7 is out of range", fn=k)
        yield ErrorInput((x, w, b, numpy.ones((2, 3)), numpy.ones(x.shape)), {}, ValueError,
                         r"y has shape \(2, 3\)", fn=k)
        yield ErrorInput((x, w, b), {"running_mean": numpy.zeros(3)}, ValueError,
                         "running_mean is given without running_var", fn=k)


BATCH_NORM = OpInfo(name="batch_norm", ref=_ref, samples=_samples,
                  grad_refs={1: _grad_x, 2: _grad_w, 3: _grad_b}, error_inputs=_errors,
                  gpu_dtypes=(F16, BF16, F32, F64),
                  # the offset sample: float32 rounds x + 1000 to ~6e-5, which the
                  # normalization scales by 1/σ ~ 1/2
                  tol={numpy.dtype(numpy.float32): (1e-4, 2e-4)},
                  fd_tol=(1e-6, 1e-7))


# ---- layer_norm, rms_norm -------------------------------------------------------------------

# (shape, params, offset): rows of 1, 5, 10, 16, 33 (a warp's registers E = 2), 70 (E = 4)
# values; x1 1-d; more rows than the emulator's warps (grid-stride), more rows than one chunk
# of the weight gradient's column sums (split into 3); a large common offset (the variance
# must not cancel away); no rows; rows of 0 values.
ROW_CASES = [
    ((4, 10), {}, 0.0),
    ((3, 2, 5), {"eps": 1e-3}, 0.0),
    ((7,), {}, 0.0),
    ((1, 1), {}, 0.0),
    ((2, 33), {"eps": 0.1}, 0.0),
    ((2, 70), {}, 0.0),
    ((40, 5), {}, 0.0),
    ((130, 3), {}, 0.0),
    ((3, 16), {}, 1000.0),
    ((0, 4), {}, 0.0),
    ((3, 0), {}, 0.0),
]


def _row_stats(x, rms, eps):
    """[(μ, r)] per row of x as (rows, C), by explicit sums."""
    out = []
    for row in x:
        C = len(row)
        if C == 0:  # an empty row: nothing to normalize
            out.append((0.0, 1.0))
            continue
        mu = 0.0 if rms else sum(row) / C
        ms = sum((v - mu) ** 2 for v in row) / C
        out.append((mu, 1.0 / numpy.sqrt(ms + eps)))
    return out


def _rows2d(x):
    return x.reshape(int(numpy.prod(x.shape[:-1])), x.shape[-1])


def _norm_ref(rms, eps_default):
    def ref(x, w, b=None, eps=eps_default):
        rows = _rows2d(x)
        y = numpy.empty_like(rows)
        for i, (mu, r) in enumerate(_row_stats(rows, rms, eps)):
            y[i] = (rows[i] - mu) * r * w + (0.0 if b is None else b)
        return y.reshape(x.shape)
    return ref


def _norm_grad_x(rms, eps_default):
    """Σ_j gy_j ∂y_j/∂x_i per row with the full Jacobian:
    layer_norm ∂y_j/∂x_i = w_j r (δ_ij - 1/C - x̂_i x̂_j / C),
    rms_norm   ∂y_j/∂x_i = w_j r (δ_ij - x̂_i x̂_j / C)."""
    def grad(x, w, *rest, eps=eps_default):
        gy = rest[-1]
        rows, g = _rows2d(x), _rows2d(gy)
        out = numpy.empty_like(rows)
        C = rows.shape[1]
        if C == 0:
            return out.reshape(x.shape)
        for i, (mu, r) in enumerate(_row_stats(rows, rms, eps)):
            xhat = (rows[i] - mu) * r
            jac = r * (numpy.eye(C) - (0.0 if rms else 1.0 / C) - numpy.outer(xhat, xhat) / C)
            out[i] = jac @ (w * g[i])
        return out.reshape(x.shape)
    return grad


def _norm_grad_w(rms, eps_default):
    """Σ over the rows of gy x̂ (0 without rows)."""
    def grad(x, w, *rest, eps=eps_default):
        gy = rest[-1]
        rows, g = _rows2d(x), _rows2d(gy)
        total = numpy.zeros(rows.shape[1])
        for i, (mu, r) in enumerate(_row_stats(rows, rms, eps)):
            total += g[i] * (rows[i] - mu) * r
        return total
    return grad


def _norm_grad_b(x, w, b, y, gy, eps=1e-5):
    g = _rows2d(gy)
    return numpy.array([sum(g[:, c], 0.0) for c in range(g.shape[1])])


def _row_samples(with_bias):
    def samples(rng):
        for shape, params, offset in ROW_CASES:
            C = shape[-1]
            x = offset + 2 * rng.standard_normal(shape)
            w = rng.uniform(0.5, 1.5, C) * rng.choice([-1.0, 1.0], C)
            inputs = (x, w, rng.standard_normal(C)) if with_bias else (x, w)
            name = f"{'x'.join(map(str, shape))}-{params}" + (f"-offset{offset:g}" if offset
                                                                 else "")
            yield Sample(inputs, dict(params), name)
    return samples


def _row_errors(with_bias):
    def errors(rng):
        x = rng.standard_normal((4, 10))  # the first sample's shape
        w, b = numpy.ones(10), numpy.zeros(10)
        extra = (b,) if with_bias else ()
        yield ErrorInput((x, numpy.ones(4), *extra), {}, ValueError,
                         r"x2 \(weight\) has shape \(4,\); expected \(10,\)")
        yield ErrorInput((x, numpy.ones((1, 10)), *extra), {}, ValueError,
                         r"x2 \(weight\) has shape \(1, 10\); expected \(10,\)")
        yield ErrorInput((numpy.ones(()), numpy.ones(1), *(numpy.ones(1),) * bool(with_bias)),
                         {}, ValueError, r"x1 must have at least 1 dim.*got shape \(\)")
        yield ErrorInput((x, w, *extra), {"eps": 0.0}, ValueError, "eps must be > 0, got 0.0")
        yield ErrorInput((x, w, *extra), {"eps": -1e-5}, ValueError,
                         "eps must be > 0, got -1e-05")
        yield ErrorInput((x, w, *extra), {"eps": float("nan")}, ValueError,
                         "eps must be finite, got nan")
        yield ErrorInput((x, w, *extra), {"eps": float("inf")}, ValueError,
                         "eps must be finite, got inf")
        yield ErrorInput((x, w, *extra), {"eps": "1e-5"}, TypeError, "eps must be .*, got '1e-5'")
        yield ErrorInput((x, w, *extra), {"eps": None}, TypeError, "eps must be .*, got None")
        if with_bias:
            yield ErrorInput((x, w, numpy.zeros(9)), {}, ValueError,
                             r"x3 \(bias\) has shape \(9,\); expected \(10,\)")
        for k in range(1, 3 + with_bias):
            yield ErrorInput((x, w, *extra), {"eps": 0}, ValueError, "eps must be > 0, got 0",
                             fn=k)
            yield ErrorInput((x, numpy.ones(3), *extra), {}, ValueError,
                             r"x2 \(weight\) has shape \(3,\)", fn=k)
            yield ErrorInput((x, w, *extra, numpy.ones((2, 3)), numpy.ones(x.shape)), {},
                             ValueError, r"y has shape \(2, 3\)", fn=k)
            yield ErrorInput((x, w, *extra, numpy.ones(x.shape), numpy.ones((4, 9))), {},
                             ValueError, r"gy has shape \(4, 9\)", fn=k)
    return errors


# float32: the offset sample rounds x + 1000 to ~6e-5, which the normalization scales by
# 1/σ ~ 1/2 (the reference normalizes the rounded inputs exactly); the kernels' float32
# means of those values err by a few 1e-5 too.
ROW_TOL = {F32: (1e-4, 2e-4), F64: (1e-10, 1e-11), F16: (1e-2, 4e-3)}

RECORDS = [
    BATCH_NORM,
    OpInfo(name="layer_norm", ref=_norm_ref(False, 1e-5), samples=_row_samples(True),
           grad_refs={1: _norm_grad_x(False, 1e-5), 2: _norm_grad_w(False, 1e-5),
                      3: _norm_grad_b},
           gpu_dtypes=(F16, BF16, F32, F64), error_inputs=_row_errors(True), tol=ROW_TOL,
           fd_tol=(1e-6, 1e-7)),
    OpInfo(name="rms_norm", ref=_norm_ref(True, 1e-6), samples=_row_samples(False),
           grad_refs={1: _norm_grad_x(True, 1e-6), 2: _norm_grad_w(True, 1e-6)},
           gpu_dtypes=(F16, BF16, F32, F64), error_inputs=_row_errors(False), tol=ROW_TOL,
           fd_tol=(1e-6, 1e-7)),
]

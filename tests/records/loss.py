"""OpInfo records of the losses (float64 references in plain NumPy)."""
from __future__ import annotations

import numpy

from opinfo import BF16, F16, F32, F64, ErrorInput, OpInfo, Sample

# Every loss has kernels in every float dtype. The 16-bit tolerance is the default one
# (OpInfo.tolerance: the float32 tolerance plus two roundings), derived from the rule:
# per-row / per-element terms in float32, sums in double (float32 on NumPy), the result
# rounded once; the gradients read the 16-bit x, targets and gy (weights stay float32).
KERNEL_DTYPES = (F16, BF16, F32, F64)


def _reduce(terms, reduction):
    if reduction == "none":
        return terms
    total = numpy.sum(terms)
    return numpy.asarray(total if reduction == "sum" else total / terms.size)


def _grad_scale(g, reduction, n):
    """gy as it reaches each term: itself ("none", "sum") or divided by n ("mean")."""
    return g / n if reduction == "mean" else g


# ---- elementwise losses ---------------------------------------------------------

PAIR_CASES = [((257,), "mean"), ((3, 4, 5), "sum"), ((3, 4, 5), "none"), ((1,), "mean"),
              ((), "mean"), ((16, 65), "mean"), ((0,), "sum"), ((0, 3), "none"),
              ((33, 8), "none"), ((2, 3), "sum")]


def _pair_samples(make_x1, make_x2):
    def samples(rng):
        for shape, reduction in PAIR_CASES:
            x1, x2 = numpy.asarray(make_x1(rng, shape)), numpy.asarray(make_x2(rng, shape))
            yield Sample((x1, x2), {"reduction": reduction},
                         f"{'x'.join(map(str, shape)) or 'scalar'}-{reduction}")
    return samples


def _normal(rng, shape):
    return rng.standard_normal(shape)


def _logits(rng, shape):  # logits up to ±30: the tails of log(1 + e^-|x|)
    return rng.uniform(-30, 30, shape) * rng.choice([0.1, 1.0], shape)


def _targets(rng, shape):
    return rng.uniform(0, 1, shape)


def _pair_errors(rng):
    a, b = rng.standard_normal(3), rng.standard_normal(4)
    yield ErrorInput((a, b), {}, ValueError, r"\(3,\) and \(4,\)")
    yield ErrorInput((a, b), {}, ValueError, r"\(3,\) and \(4,\)", fn=1)
    yield ErrorInput((a, a), {"reduction": "avg"}, ValueError, "'avg'")
    yield ErrorInput((a, a), {"reduction": None}, ValueError, "None", fn=2)
    # gy of the wrong shape for the reduction: per element for "mean", 0-d for "none"
    yield ErrorInput((a, a, numpy.ones(()), numpy.ones(3)), {}, ValueError,
                     r"gy has shape \(3,\)", fn=1)
    yield ErrorInput((a, a, numpy.ones(3), numpy.ones(())), {"reduction": "none"}, ValueError,
                     r"gy has shape \(\)", fn=2)
    m = rng.standard_normal((4, 3))
    yield ErrorInput((m, m.T), {}, ValueError, r"\(4, 3\) and \(3, 4\)")
    yield ErrorInput((m, m.T), {}, ValueError, r"\(4, 3\) and \(3, 4\)", fn=2)
    yield ErrorInput((a, a), {"reduction": "SUM"}, ValueError, "got 'SUM'")
    yield ErrorInput((a, a), {"reduction": 1}, ValueError, "got 1", fn=1)


def _pair(name, term, d1, d2, make_x1=_normal, make_x2=_normal):
    return OpInfo(
        name=name,
        ref=lambda u, v, reduction: _reduce(term(u, v), reduction),
        samples=_pair_samples(make_x1, make_x2),
        grad_refs={
            1: lambda u, v, y, g, reduction: d1(u, v) * _grad_scale(g, reduction, u.size),
            2: lambda u, v, y, g, reduction: d2(u, v) * _grad_scale(g, reduction, u.size),
        },
        gpu_dtypes=KERNEL_DTYPES, error_inputs=_pair_errors)


def _sigma(x):
    return numpy.exp(-numpy.logaddexp(0.0, -x))


# bce_with_logits with weight / pos_weight (PyTorch's broadcasting to the logits' shape):
# (shape, weight shape or None, pos_weight shape or None, reduction)
BCE_WEIGHTED_CASES = [((8, 5), (5,), None, "mean"), ((8, 5), None, (5,), "sum"),
                      ((3, 4, 5), (4, 1), (5,), "none"), ((257,), (257,), (1,), "mean"),
                      ((), (), (), "sum"), ((16, 65), (16, 65), (65,), "none"),
                      ((0, 3), (3,), (3,), "sum"), ((2, 3), None, (2, 3), "none")]


def _bce_samples(rng):
    yield from _pair_samples(_logits, _targets)(rng)
    for shape, w_shape, p_shape, reduction in BCE_WEIGHTED_CASES:
        params = {"reduction": reduction}
        if w_shape is not None:
            params["weight"] = numpy.asarray(rng.uniform(0.1, 3.0, w_shape))
        if p_shape is not None:
            params["pos_weight"] = numpy.asarray(rng.uniform(0.1, 5.0, p_shape))
        yield Sample((numpy.asarray(_logits(rng, shape)), numpy.asarray(_targets(rng, shape))),
                     params,
                     f"{'x'.join(map(str, shape)) or 'scalar'}-{reduction}-w"
                     f"{'x'.join(map(str, w_shape or ())) if w_shape is not None else 'none'}"
                     f"-pw{'x'.join(map(str, p_shape)) if p_shape is not None else 'none'}")


def _bce_weighted_ref(x, t, reduction, weight=None, pos_weight=None):
    """-w [p t log σ(x) + (1 - t) log(1 - σ(x))], PyTorch's documented formula."""
    w = 1.0 if weight is None else weight
    p = 1.0 if pos_weight is None else pos_weight
    log_sig = -numpy.logaddexp(0.0, -x)
    log_one_minus_sig = -numpy.logaddexp(0.0, x)
    return _reduce(-w * (p * t * log_sig + (1 - t) * log_one_minus_sig), reduction)


def _bce_weighted_grad_ref(k):
    def grad(x, t, y, g, reduction, weight=None, pos_weight=None):
        w = 1.0 if weight is None else weight
        p = 1.0 if pos_weight is None else pos_weight
        # d/dx: -w [p t (1 - σ) - (1 - t) σ]; d/dt: -w [p log σ(x) - log(1 - σ(x))]
        if k == 1:
            d = -w * (p * t * (1 - _sigma(x)) - (1 - t) * _sigma(x))
        else:
            d = -w * (p * -numpy.logaddexp(0.0, -x) + numpy.logaddexp(0.0, x))
        return d * _grad_scale(g, reduction, x.size)
    return grad


def _bce_errors(rng):
    yield from _pair_errors(rng)
    x, t = rng.standard_normal((4, 3)), rng.uniform(0, 1, (4, 3))
    yield ErrorInput((x, t), {"weight": numpy.ones(4)}, ValueError,
                     r"weight of shape \(4,\) does not broadcast to the shape of x1 \(4, 3\)")
    yield ErrorInput((x, t), {"pos_weight": numpy.ones((2, 4, 3))}, ValueError,
                     r"pos_weight of shape \(2, 4, 3\)", fn=1)
    yield ErrorInput((x, t), {"pos_weight": numpy.ones((4, 1, 1))}, ValueError,
                     r"pos_weight of shape \(4, 1, 1\)", fn=2)
    yield ErrorInput((x, t), {"weight": 2.0}, TypeError, "weight must be None or")
    yield ErrorInput((x, t), {"pos_weight": numpy.ones(3, numpy.int32)}, TypeError,
                     "pos_weight has dtype int32", fn=1)


# ---- softmax cross-entropy ------------------------------------------------------

# (rows, classes, reduction, label dtype, ignore_index, fraction of ignored rows)
CE_CASES = [(8, 5, "mean", numpy.int64, -100, 0.0), (8, 5, "sum", numpy.int32, -100, 0.0),
            (8, 5, "none", numpy.int64, -100, 0.0), (1, 1, "mean", numpy.int32, -100, 0.0),
            (16, 40, "mean", numpy.int64, -100, 0.3), (6, 7, "sum", numpy.int32, 2, 0.3),
            (10, 7, "none", numpy.int64, 0, 0.0), (5, 33, "mean", numpy.int64, -1, 0.4),
            (4, 100, "sum", numpy.int32, -100, 0.0), (3, 200, "mean", numpy.int64, -100, 0.0),
            (2, 400, "none", numpy.int64, -100, 0.0),  # warp kernels E = 4, 8, 16
            (4, 1000, "mean", numpy.int32, -100, 0.0),  # float32 warp E=32, float64 block
            (3, 1100, "none", numpy.int64, -100, 0.3),  # one block per row
            (0, 4, "sum", numpy.int64, -100, 0.0), (0, 4, "none", numpy.int32, -100, 0.0),
            (37, 3, "sum", numpy.int64, -100, 0.1),  # W lanes per row: 4 (3 classes),
            (12, 16, "none", numpy.int64, -100, 0.3),  # 16 (some rows ignored in a warp)
            (1, 5000, "mean", numpy.int64, -100, 0.0)]  # a block streaming the row
# class weights (C,): (rows, classes, reduction, ignore_index, fraction of ignored rows)
CE_WEIGHTED_CASES = [(8, 5, "mean", -100, 0.0), (16, 40, "mean", -1, 0.3),
                     (6, 7, "sum", 2, 0.3), (10, 7, "none", -100, 0.2),
                     (3, 200, "mean", -100, 0.0),  # warp E=8
                     (3, 1100, "mean", -100, 0.3),  # one block per row
                     (4, 1000, "none", -100, 0.0), (0, 4, "sum", -100, 0.0)]
# logits (N, C, d1, ...) with labels (N, d1, ...), the classes along axis 1:
# (shape, reduction, ignore_index, fraction of ignored positions, weighted)
CE_ND_CASES = [((3, 5, 4), "mean", -100, 0.2, False), ((2, 7, 3, 2), "none", -100, 0.2, True),
               ((2, 40, 3), "sum", 1, 0.3, True), ((2, 1100, 2), "none", -100, 0.0, False),
               ((4, 3, 1), "mean", -100, 0.0, True), ((0, 3, 2), "sum", -100, 0.0, False),
               ((2, 6, 5), "mean", -1, 0.3, True)]
# label_smoothing with integer labels: (shape, reduction, label_smoothing, ignore_index,
# fraction of ignored positions, weighted)
CE_SMOOTH_CASES = [((8, 5), "mean", 0.1, -100, 0.3, False), ((6, 7), "sum", 0.5, 2, 0.2, True),
                   ((10, 7), "none", 1.0, -100, 0.2, False),
                   ((3, 1100), "mean", 0.2, -100, 0.3, True),  # long rows
                   ((2, 4, 3), "none", 0.3, -1, 0.2, True),
                   ((0, 4), "sum", 0.1, -100, 0.0, False),
                   ((4, 40, 3), "mean", 0.05, -100, 0.0, True),
                   ((1, 1), "mean", 0.4, -100, 0.0, False),
                   ((5, 33), "mean", 0.7, -1, 0.4, False)]
# probability targets x2 of x1's shape: (shape, reduction, label_smoothing, weighted,
# normalized rows (else any values in [0, 1], as PyTorch accepts))
CE_PROB_CASES = [((8, 5), "mean", 0.0, False, True), ((6, 7), "sum", 0.2, True, True),
                 ((10, 7), "none", 0.0, True, False), ((3, 1100), "mean", 0.1, False, True),
                 ((2, 5, 3, 2), "none", 0.3, True, True), ((3, 4, 5), "mean", 0.0, False, False),
                 ((0, 4), "sum", 0.0, False, True), ((1, 1), "mean", 0.5, False, True),
                 ((37, 3), "sum", 0.0, True, True), ((4, 300), "mean", 1.0, True, True),
                 ((2, 40, 3), "mean", 0.05, True, False)]


def _ce_samples(rng):
    for rows, classes, reduction, label_dtype, ignore, ignored in CE_CASES:
        x = rng.standard_normal((rows, classes)) * 3
        labels = rng.integers(0, classes, rows)
        if ignored:
            labels[rng.uniform(size=rows) < ignored] = ignore
            labels[0] = 0 if ignore != 0 else 1  # at least one counted row for the mean
        yield Sample((x, labels.astype(label_dtype)),
                     {"reduction": reduction, "ignore_index": ignore},
                     f"{rows}x{classes}-{reduction}-{numpy.dtype(label_dtype).name}-"
                     f"ignore{ignore}")
    for rows, classes, reduction, ignore, ignored in CE_WEIGHTED_CASES:
        x = rng.standard_normal((rows, classes)) * 3
        labels = rng.integers(0, classes, rows)
        if ignored:
            labels[rng.uniform(size=rows) < ignored] = ignore
            labels[0] = 0 if ignore != 0 else 1
        weight = rng.uniform(0.1, 3.0, classes)
        yield Sample((x, labels), {"reduction": reduction, "ignore_index": ignore,
                                   "weight": weight},
                     f"{rows}x{classes}-{reduction}-weighted-ignore{ignore}")
    for shape, reduction, ignore, ignored, weighted in CE_ND_CASES:
        x = rng.standard_normal(shape) * 3
        labels = rng.integers(0, shape[1], (shape[0], *shape[2:]))
        if ignored:
            labels[rng.uniform(size=labels.shape) < ignored] = ignore
            labels.flat[0] = 0 if ignore != 0 else 1
        params = {"reduction": reduction, "ignore_index": ignore}
        if weighted:
            params["weight"] = rng.uniform(0.1, 3.0, shape[1])
        yield Sample((x, labels), params,
                     f"{'x'.join(map(str, shape))}-{reduction}-"
                     f"{'weighted-' if weighted else ''}ignore{ignore}")
    for shape, reduction, eps, ignore, ignored, weighted in CE_SMOOTH_CASES:
        x = rng.standard_normal(shape) * 3
        labels = rng.integers(0, shape[1], (shape[0], *shape[2:]))
        if ignored:
            labels[rng.uniform(size=labels.shape) < ignored] = ignore
            labels.flat[0] = 0 if ignore != 0 else 1
        params = {"reduction": reduction, "ignore_index": ignore, "label_smoothing": eps}
        if weighted:
            params["weight"] = rng.uniform(0.1, 3.0, shape[1])
        yield Sample((x, labels), params,
                     f"{'x'.join(map(str, shape))}-{reduction}-smoothing{eps}-"
                     f"{'weighted-' if weighted else ''}ignore{ignore}")


def _ce_prob_samples(rng):
    for shape, reduction, eps, weighted, normalized in CE_PROB_CASES:
        x = rng.standard_normal(shape) * 3
        q = rng.uniform(0, 1, shape)
        if normalized and q.size:
            q /= q.sum(axis=1, keepdims=True)
        params = {"reduction": reduction}
        if eps:
            params["label_smoothing"] = eps
        if weighted:
            params["weight"] = rng.uniform(0.1, 3.0, shape[1])
        yield Sample((x, q), params,
                     f"{'x'.join(map(str, shape))}-{reduction}-probabilities-smoothing{eps}-"
                     f"{'weighted' if weighted else 'unweighted'}"
                     f"{'' if normalized else '-unnormalized'}")


def _row_weights(t, ignore_index, weight):
    """w[t_n] per row (1 without weights), 0 for the ignored rows (float64)."""
    w = numpy.zeros(len(t))
    for n in range(len(t)):
        if t[n] != ignore_index:
            w[n] = 1.0 if weight is None else float(weight[t[n]])
    return w


def _rows(x, t):
    """Logits (N, C, d1, ...) and labels (N, d1, ...) as rows (N d1 ..., C) and (N d1 ...,)."""
    return numpy.moveaxis(x, 1, -1).reshape(t.size, x.shape[1]), t.reshape(-1)


def _log_softmax_row(row):
    row = row - row.max()
    return row - numpy.log(numpy.exp(row).sum())


def _ce_ref(x, t, reduction, ignore_index=-100, weight=None, label_smoothing=0.0):
    """PyTorch's cross_entropy: integer labels t ((1 - ε) nll + ε/C Σ_c -w_c log p_c per
    counted row; "mean" over Σ w_t of the counted rows), or probabilities t of x's shape
    (-Σ_c w_c ((1 - ε) t_c + ε/C) log p_c per row; "mean" over the rows)."""
    probs = t.dtype.kind == "f"
    if x.ndim > 2:
        rows_t = _rows(t, t[:, 0])[0] if probs else t.reshape(-1)
        y = _ce_ref(_rows(x, x[:, 0])[0], rows_t, reduction, ignore_index, weight,
                    label_smoothing)
        return y.reshape(x.shape[:1] + x.shape[2:]) if reduction == "none" else y
    rows, classes = x.shape
    eps = label_smoothing
    wc = numpy.ones(classes) if weight is None else weight
    losses = numpy.zeros(rows)
    for n in range(rows):
        logp = _log_softmax_row(x[n])
        if probs:
            target = (1 - eps) * t[n] + eps / classes
            losses[n] = -(wc * target * logp).sum()
        elif t[n] != ignore_index:
            losses[n] = ((1 - eps) * -wc[t[n]] * logp[t[n]]
                         + eps / classes * -(wc * logp).sum())
    if reduction == "none":
        return losses
    if reduction == "sum":
        return numpy.asarray(losses.sum())
    if probs:
        return numpy.asarray(losses.sum() / rows)
    return numpy.asarray(losses.sum() / _row_weights(t, ignore_index, weight).sum())


def _ce_grad_ref(x, t, y, g, reduction, ignore_index=-100, weight=None, label_smoothing=0.0,
                 wrt=1):
    probs = t.dtype.kind == "f"
    if x.ndim > 2:
        rows_t = _rows(t, t[:, 0])[0] if probs else t.reshape(-1)
        rows = _ce_grad_ref(_rows(x, x[:, 0])[0], rows_t, None,
                            g.reshape(-1) if reduction == "none" else g, reduction,
                            ignore_index, weight, label_smoothing, wrt)
        return numpy.moveaxis(rows.reshape(x.shape[0], *x.shape[2:], x.shape[1]), -1, 1)
    rows, classes = x.shape
    eps = label_smoothing
    wc = numpy.ones(classes) if weight is None else weight
    grad = numpy.zeros_like(x)
    if reduction == "mean":
        g = g / (rows if probs else _row_weights(t, ignore_index, weight).sum())
    for n in range(rows):
        if not probs and t[n] == ignore_index:
            continue
        g_n = g[n] if reduction == "none" else g
        logp = _log_softmax_row(x[n])
        p = numpy.exp(logp)
        if wrt == 2:  # d/dt_c of -Σ_c w_c ((1 - ε) t_c + ε/C) log p_c
            grad[n] = -(1 - eps) * wc * logp * g_n
        elif probs:  # Σ_c a_c (p - e_c), a = w ((1 - ε) t + ε/C)
            a = wc * ((1 - eps) * t[n] + eps / classes)
            grad[n] = (a.sum() * p - a) * g_n
        else:
            onehot = numpy.zeros(classes)
            onehot[t[n]] = 1.0
            grad[n] = ((1 - eps) * wc[t[n]] * (p - onehot)
                       + eps / classes * (wc.sum() * p - wc)) * g_n
    return grad


def _ce_errors(rng):
    x = rng.standard_normal((4, 3))
    t = numpy.array([0, 1, 2, 0])
    yield ErrorInput((x[0], t), {}, ValueError, r"shape \(3,\)")
    yield ErrorInput((x, t[:3]), {}, ValueError, r"\(3,\)")
    yield ErrorInput((x, t.astype(numpy.float64)), {}, ValueError,
                     r"float x2 holds class probabilities and must have the shape of x1 "
                     r"\(4, 3\), got \(4,\)")
    yield ErrorInput((x, t.astype(numpy.int16)), {}, TypeError, "int16", fn=1)
    yield ErrorInput((x, t), {"ignore_index": 1.5}, TypeError, "1.5")
    yield ErrorInput((x, t), {"reduction": "mean "}, ValueError, "'mean '")
    yield ErrorInput((x, t), {"reduction": 1}, ValueError, "got 1", fn=1)
    yield ErrorInput((x, t), {"ignore_index": True}, TypeError,
                     "ignore_index must be an int, got True")
    yield ErrorInput((x, t[:, None]), {}, ValueError,
                     r"labels of shape \(4,\) for x1 of shape \(4, 3\), got \(4, 1\)")
    yield ErrorInput((x, t[:, None]), {}, ValueError, r"got \(4, 1\)", fn=1)
    yield ErrorInput((rng.standard_normal((2, 3, 4)), t[:2]), {}, ValueError,
                     r"labels of shape \(2, 4\) for x1 of shape \(2, 3, 4\), got \(2,\)")
    yield ErrorInput((rng.standard_normal((2, 3, 4)), t[:2, None].repeat(3, 1)), {},
                     ValueError, r"got \(2, 3\)", fn=1)
    yield ErrorInput((x[0], t[:3]), {}, ValueError,
                     r"logits \(N, C\) or \(N, C, d1, ...\), got shape \(3,\)")
    yield ErrorInput((x, t > 0), {}, TypeError, "bool")
    # labels outside [0, C) are rejected on the NumPy path only (kernels give NaN rows, no
    # device sync): tested in tests/ops/test_softmax_family.py, not here (run on every backend)
    yield ErrorInput((x, t, numpy.ones(()), numpy.ones(4)), {}, ValueError,
                     r"gy has shape \(4,\)", fn=1)
    # class weights: one per class, a float array of the inputs' backend
    yield ErrorInput((x, t), {"weight": numpy.ones(4)}, ValueError,
                     r"weight must have shape \(3,\).*got \(4,\)")
    yield ErrorInput((x, t), {"weight": numpy.ones((1, 3))}, ValueError, r"got \(1, 3\)",
                     fn=1)
    yield ErrorInput((x, t), {"weight": [1.0, 2.0, 3.0]}, TypeError, "weight must be None or")
    yield ErrorInput((x, t), {"weight": numpy.ones(3, numpy.int64)}, TypeError,
                     "weight has dtype int64")
    # label_smoothing: a float in [0, 1]
    yield ErrorInput((x, t), {"label_smoothing": 1.5}, ValueError,
                     r"label_smoothing must be in \[0, 1\], got 1.5")
    yield ErrorInput((x, t), {"label_smoothing": -0.1}, ValueError, "got -0.1", fn=1)
    yield ErrorInput((x, t), {"label_smoothing": float("nan")}, ValueError, "got nan")
    yield ErrorInput((x, t), {"label_smoothing": "0.1"}, TypeError,
                     "label_smoothing must be a float in .*got '0.1'")
    yield ErrorInput((x, t), {"label_smoothing": True}, TypeError, "got True", fn=1)
    # integer x2 of the logits' shape: probabilities must be float (PyTorch's dtype error)
    yield ErrorInput((x, numpy.zeros((4, 3), numpy.int64)), {}, TypeError,
                     r"x2 has the shape of x1 \(4, 3\) \(class probabilities\) but dtype int64")


def _ce_prob_errors(rng):
    x = rng.standard_normal((4, 3))
    q = rng.uniform(0, 1, (4, 3))
    t = numpy.array([0, 1, 2, 0])
    yield ErrorInput((x, q[:, :2]), {}, ValueError,
                     r"must have the shape of x1 \(4, 3\), got \(4, 2\)")
    yield ErrorInput((x, q.T), {}, ValueError, r"got \(3, 4\)", fn=1)
    yield ErrorInput((x, q[:2]), {}, ValueError, r"got \(2, 3\)", fn=2)
    yield ErrorInput((x, q), {"ignore_index": 1}, ValueError,
                     "ignore_index is not supported with probability targets.*ignore_index=1")
    yield ErrorInput((x, q), {"ignore_index": 0}, ValueError, "ignore_index=0", fn=2)
    yield ErrorInput((x, q), {"label_smoothing": 2}, ValueError, "got 2", fn=2)
    yield ErrorInput((x, q), {"weight": numpy.ones(4)}, ValueError,
                     r"weight must have shape \(3,\)", fn=2)
    yield ErrorInput((x, q), {"reduction": "avg"}, ValueError, "'avg'", fn=2)
    yield ErrorInput((x, q, numpy.ones(()), numpy.ones(4)), {}, ValueError,
                     r"gy has shape \(4,\)", fn=2)
    # integer labels have no gradient
    for labels in (t, t.astype(numpy.int32)):
        yield ErrorInput((x, labels, numpy.ones(()), numpy.ones(())), {}, TypeError,
                         f"x2 has dtype {labels.dtype}: integer class labels have no gradient",
                         fn=2)


RECORDS = [
    # integer labels: no gradient wrt x2 (softmax_cross_entropy_wrt_x2 raises TypeError)
    OpInfo(name="softmax_cross_entropy", ref=_ce_ref, samples=_ce_samples, wrt=(1,),
           grad_refs={1: _ce_grad_ref}, int_inputs=(2,), error_inputs=_ce_errors,
           gpu_dtypes=KERNEL_DTYPES),
    # probability targets: differentiable wrt both
    OpInfo(name="softmax_cross_entropy", ref=_ce_ref, samples=_ce_prob_samples,
           grad_refs={1: _ce_grad_ref,
                      2: lambda *a, **kw: _ce_grad_ref(*a, **kw, wrt=2)},
           error_inputs=_ce_prob_errors, gpu_dtypes=KERNEL_DTYPES),
    OpInfo(name="bce_with_logits", ref=_bce_weighted_ref, samples=_bce_samples,
           grad_refs={1: _bce_weighted_grad_ref(1), 2: _bce_weighted_grad_ref(2)},
           error_inputs=_bce_errors, gpu_dtypes=KERNEL_DTYPES),
    _pair("mse", lambda u, v: (u - v) ** 2, lambda u, v: 2 * (u - v), lambda u, v: 2 * (v - u)),
    _pair("mae", lambda u, v: numpy.abs(u - v), lambda u, v: numpy.sign(u - v),
          lambda u, v: numpy.sign(v - u)),
]

"""Mixed precision: :func:`autocast` (operators in 16 bits where it is safe) and
:class:`GradScaler` (dynamic loss scaling for float16), after ``torch.autocast`` and
``torch.amp.GradScaler``.

Autocast policy (:data:`POLICY`), applied by :func:`gpuops.autograd.apply` to every operator
call on Tensors inside an ``autocast`` region of the current thread:

==============  ===========================================================  ===============
class           operators                                                    inputs run in
==============  ===========================================================  ===============
``lower``       matmul, linear, conv2d, attention                            the autocast
                                                                             dtype (16 bits)
``float32``     sum, mean, softmax, log_softmax, softmax_cross_entropy,      float32
                bce_with_logits, mse, mae, batch_norm, layer_norm, rms_norm,
                lrn
``promote``     every other operator                                         the widest
                                                                             float input
==============  ===========================================================  ===============

``lrn`` (local response normalization: a power of a sum of squares) is normalization too;
torch, which has no such operator, runs the ``pow`` it is made of in float32.

Only floating inputs are cast (integer labels and indices pass as they are), and float64
inputs are left alone by ``lower`` and ``float32`` (as torch leaves them). The casts are
recorded (``Tensor.astype``), so the gradient reaches a float32 parameter in float32.
``promote`` makes the floating inputs of one call agree: all of one dtype stay as they are;
otherwise float64 if one is, else float32 (float16 + bfloat16 -> float32). Within one
region, the 16-bit cast of a leaf Tensor that requires a gradient (a parameter) is made once
and reused (torch's cast cache); the cache is dropped when the outermost region of the
thread exits, so parameters updated between regions are cast afresh. Update parameters
outside the region (as with torch).

Loss scaling (:class:`GradScaler`): ``scale(loss)`` multiplies by the scale ``S``;
``unscale_(optimizer)`` multiplies every gradient by ``1/S`` (a float32 power of two: exact)
in place with one fused launch per dtype (:func:`gpuops.ops.optim.unscale_grads`) that also
reports whether a gradient holds inf or NaN; ``step`` skips the optimizer's step in that
case; ``update`` backs the scale off (``S·backoff_factor``) after a skipped step and grows
it (``S·growth_factor``, when finite) after ``growth_interval`` steps in a row without one,
the rules of ``torch.amp.GradScaler``.
"""
from __future__ import annotations

import contextlib
import math
import threading
from typing import Any, Iterator

import ml_dtypes
import numpy

from . import autograd as _autograd
from .autograd import Tensor
from .ops.optim import unscale_grads

__all__ = ["autocast", "is_autocast_enabled", "get_autocast_dtype", "POLICY", "GradScaler"]

bfloat16 = numpy.dtype(ml_dtypes.bfloat16)
HALF = (numpy.dtype(numpy.float16), bfloat16)
FLOATS = frozenset(HALF + (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64)))
F32, F64 = numpy.dtype(numpy.float32), numpy.dtype(numpy.float64)

# The autocast policy: operator name -> "lower" or "float32"; any other operator "promote".
POLICY: dict[str, str] = {
    **{name: "lower" for name in ("matmul", "linear", "conv2d", "attention")},
    **{name: "float32" for name in (
        "sum", "mean", "softmax", "log_softmax",
        "softmax_cross_entropy", "bce_with_logits", "mse", "mae",
        "batch_norm", "layer_norm", "rms_norm", "lrn")},
}

_state = threading.local()  # .dtype (None outside a region), .cache {id: (leaf, cast)}


def is_autocast_enabled() -> bool:
    """Whether the current thread is inside an enabled ``autocast`` region."""
    return getattr(_state, "dtype", None) is not None


def get_autocast_dtype() -> numpy.dtype | None:
    """The 16-bit dtype of the current thread's autocast region, or None outside one."""
    return getattr(_state, "dtype", None)


@contextlib.contextmanager
def autocast(dtype: Any = ml_dtypes.bfloat16, enabled: bool = True) -> Iterator[None]:
    """Run the Tensor operators of this thread under the autocast policy (module docstring):
    matrix products in ``dtype`` (``gpuops.bfloat16`` or ``numpy.float16``), reductions,
    softmax, losses and normalization in float32. ``enabled=False`` runs a region without
    autocast (also inside an enabled one). Regions nest; the innermost decides."""
    if not isinstance(enabled, (bool, numpy.bool_)):
        raise TypeError(f"autocast: enabled must be a bool, got {enabled!r}")
    try:
        target = numpy.dtype(dtype)
    except TypeError:
        target = None
    if target not in HALF:
        raise ValueError(f"autocast: dtype must be gpuops.bfloat16 or numpy.float16, "
                         f"got {dtype!r}")
    previous = getattr(_state, "dtype", None)
    outermost = not hasattr(_state, "cache") or _state.cache is None
    if outermost:
        _state.cache = {}
    _state.dtype = target if enabled else None
    with _autograd._scopes_lock:
        _autograd._autocast_scopes += 1
    try:
        yield
    finally:
        _state.dtype = previous
        if outermost:
            _state.cache = None
        with _autograd._scopes_lock:
            _autograd._autocast_scopes -= 1


def _float_dtype(x: Any) -> numpy.dtype | None:
    dtype = getattr(x, "dtype", None)
    return dtype if dtype in FLOATS else None


def _cast(x: Any, target: numpy.dtype) -> Any:
    """``x`` (a Tensor or an array) in ``target``, recorded for backward; a leaf parameter's
    16-bit cast comes from the region's cache."""
    if not isinstance(x, Tensor):
        return x.astype(target)
    cacheable = (target in HALF and x.requires_grad and x.creator is None
                 and _autograd.is_grad_enabled())
    if cacheable:
        hit = _state.cache.get(id(x))
        if hit is not None and hit[0] is x and hit[1].dtype == target \
                and not hit[1].creator.released:
            return hit[1]
    y = x.astype(target)
    if cacheable:
        _state.cache[id(x)] = (x, y)  # the leaf itself is held so its id stays its own
    return y


def cast_inputs(name: str, inputs: tuple) -> tuple:
    """The inputs of operator ``name`` cast by the policy of the current region (called by
    :func:`gpuops.autograd.apply` while an autocast region is open in some thread)."""
    target = getattr(_state, "dtype", None)
    if target is None:
        return inputs
    dtypes = [_float_dtype(x) for x in inputs]
    kind = POLICY.get(name, "promote")
    if kind == "lower":
        goal = {d: target for d in dtypes if d is not None and d != F64}
    elif kind == "float32":
        goal = {d: F32 for d in dtypes if d in HALF}
    else:
        present = {d for d in dtypes if d is not None}
        if len(present) <= 1:
            return inputs
        widest = F64 if F64 in present else F32
        goal = {d: widest for d in present}
    if all(d is None or goal.get(d, d) == d for d in dtypes):
        return inputs
    return tuple(x if d is None or goal.get(d, d) == d else _cast(x, goal[d])
                 for x, d in zip(inputs, dtypes))


# ---- loss scaling --------------------------------------------------------------------

_READY, _UNSCALED, _STEPPED = "ready", "unscaled", "stepped"


class GradScaler:
    """``torch.amp.GradScaler``: dynamic loss scaling for float16 training.

    ``scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()``, with
    ``scaler.unscale_(optimizer)`` before ``step`` to clip or inspect the true gradients.
    The scale lives on the host (a Python float); whether a gradient was non-finite is a
    float32 flag on the gradients' device, read once by ``step`` (torch reads it there too).
    ``enabled=False`` makes every method a pass-through (``scale`` returns the loss itself).
    """

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000,
                 enabled: bool = True) -> None:
        where = "GradScaler"
        for name, value in (("init_scale", init_scale), ("growth_factor", growth_factor),
                            ("backoff_factor", backoff_factor)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{where}: {name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{where}: {name}={value!r} must be finite and > 0")
        if growth_factor <= 1.0:
            raise ValueError(f"{where}: growth_factor={growth_factor!r} must be > 1")
        if backoff_factor >= 1.0:
            raise ValueError(f"{where}: backoff_factor={backoff_factor!r} must be < 1")
        if isinstance(growth_interval, bool) or not isinstance(growth_interval, int) \
                or growth_interval < 1:
            raise ValueError(f"{where}: growth_interval must be an int >= 1, "
                             f"got {growth_interval!r}")
        if not isinstance(enabled, (bool, numpy.bool_)):
            raise TypeError(f"{where}: enabled must be a bool, got {enabled!r}")
        self._enabled = bool(enabled)
        self._scale = float(init_scale)
        self._growth_factor = float(growth_factor)
        self._backoff_factor = float(backoff_factor)
        self._growth_interval = growth_interval
        self._growth_tracker = 0
        # per optimizer (by id): {"stage": ..., "found_inf": device flag or None}
        self._per_optimizer: dict[int, dict[str, Any]] = {}

    def is_enabled(self) -> bool:
        return self._enabled

    def get_scale(self) -> float:
        """The current scale (1.0 when disabled)."""
        return self._scale if self._enabled else 1.0

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def scale(self, outputs: Any) -> Any:
        """``outputs`` times the scale (a Tensor, or a list/tuple of them), recorded."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        if not isinstance(outputs, Tensor):
            raise TypeError(f"GradScaler.scale: expected a Tensor, got {type(outputs).__name__}")
        return outputs * self._scale

    def _state_of(self, optimizer: Any) -> dict[str, Any]:
        return self._per_optimizer.setdefault(id(optimizer), {"stage": _READY,
                                                              "found_inf": None})

    def unscale_(self, optimizer: Any) -> None:
        """Divide the optimizer's gradients by the scale, in place, and record whether any
        is inf or NaN (one fused launch per dtype; nothing waits for the device)."""
        if not self._enabled:
            return
        state = self._state_of(optimizer)
        if state["stage"] == _UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since "
                               "the last update().")
        if state["stage"] == _STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        grads = [p.grad for p in optimizer.params if p.grad is not None]
        # torch: the reciprocal in double, rounded to float32
        inv_scale = float(numpy.float32(1.0 / self._scale))
        state["found_inf"] = unscale_grads(grads, inv_scale) if grads else None
        state["stage"] = _UNSCALED

    def _found_inf(self, state: dict[str, Any]) -> bool:
        flag = state["found_inf"]
        return flag is not None and float(flag[0]) != 0.0

    def step(self, optimizer: Any) -> None:
        """``optimizer.step()`` unless a gradient is inf or NaN (unscaling them first if
        :meth:`unscale_` was not called since the last :meth:`update`)."""
        if not self._enabled:
            optimizer.step()
            return
        state = self._state_of(optimizer)
        if state["stage"] == _STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] == _READY:
            self.unscale_(optimizer)
        if not self._found_inf(state):
            optimizer.step()
        state["stage"] = _STEPPED

    def update(self, new_scale: float | None = None) -> None:
        """The scale for the next iteration: ``new_scale`` if given; else backed off when a
        step of this iteration found inf/NaN gradients (and the growth count reset), grown
        after ``growth_interval`` iterations in a row without (and the count reset)."""
        if not self._enabled:
            return
        if new_scale is not None:
            if isinstance(new_scale, bool) or not isinstance(new_scale, (int, float)) \
                    or not (math.isfinite(new_scale) and new_scale > 0):
                raise ValueError(f"GradScaler.update: new_scale must be a finite number > 0, "
                                 f"got {new_scale!r}")
            self._scale = float(new_scale)
        else:
            checked = [s for s in self._per_optimizer.values() if s["stage"] != _READY]
            if not checked:
                raise AssertionError("No inf checks were recorded prior to update.")
            if any(self._found_inf(s) for s in checked):
                self._scale *= self._backoff_factor
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
                if self._growth_tracker == self._growth_interval:
                    grown = self._scale * self._growth_factor
                    if math.isfinite(grown):
                        self._scale = grown
                    self._growth_tracker = 0
        self._per_optimizer = {}

    def state_dict(self) -> dict[str, Any]:
        """``scale``, ``growth_factor``, ``backoff_factor``, ``growth_interval`` and
        ``_growth_tracker`` (torch's keys); empty when disabled."""
        if not self._enabled:
            return {}
        return {"scale": self._scale, "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval,
                "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._enabled:
            raise RuntimeError("Attempted to call load_state_dict() on a disabled GradScaler.")
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved "
                               "from a disabled instance of GradScaler.")
        keys = ("scale", "growth_factor", "backoff_factor", "growth_interval",
                "_growth_tracker")
        missing = [k for k in keys if k not in state_dict]
        if missing:
            raise ValueError(f"GradScaler.load_state_dict: missing keys {missing}")
        values = {k: numpy.asarray(state_dict[k]).item() for k in keys}
        if not (math.isfinite(values["scale"]) and values["scale"] > 0):
            raise ValueError(f"GradScaler.load_state_dict: scale={values['scale']!r} must be "
                             "finite and > 0")
        self._scale = float(values["scale"])
        self._growth_factor = float(values["growth_factor"])
        self._backoff_factor = float(values["backoff_factor"])
        self._growth_interval = int(values["growth_interval"])
        self._growth_tracker = int(values["_growth_tracker"])

"""Optimizers: ``SGD``, ``Adam`` and ``AdamW`` hold parameters (Tensors) and their state and
step through the fused operators :func:`gpuops.sgd_step` and :func:`gpuops.adam_step`
(:mod:`gpuops.ops.optim`), with the exact rules of ``torch.optim``;
:func:`gpuops.clip_grad_norm` clips gradients by their global norm before a step.

Parameters come as an iterable of Tensors or, as in torch, an iterable of dicts
(``{"params": [...], "lr": ..., ...}``), each a *parameter group* with its own
hyperparameters (the constructor's arguments fill in those a group leaves out). They are
in ``optimizer.param_groups``, a list of such dicts, which may be edited between steps
(e.g. by a learning-rate scheduler); ``optimizer.lr`` (and the other hyperparameter
attributes) read the first group and set every group.

Float32 master weights: for a float16 or bfloat16 parameter the optimizer keeps a float32
copy (made from the parameter at its first step, or loaded with the state dict, key
``master.<i>``) and float32 state; each step updates the master from the 16-bit gradient
(widened exactly) and rounds it once into the parameter, in one fused launch per 16-bit
dtype (``master_params=`` of :func:`gpuops.sgd_step` / :func:`gpuops.adam_step`). Updates
smaller than half a 16-bit unit so accumulate in the master instead of being rounded away.
The master is the truth: writing into such a parameter's data by hand between steps is
overwritten by the next step (load a model before building its optimizer, or load the
optimizer's state dict too).
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy

from ..autograd import Tensor
from ..backend import get_array_module, to_cpu
from ..ops.optim import SIXTEEN_BIT, adam_step, clip_grad_norm, sgd_step

__all__ = ["sgd_step", "adam_step", "clip_grad_norm", "Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]

Array = Any


def _number(where: str, name: str, value: Any, low: float = 0.0, high: float = math.inf,
            high_open: bool = False) -> float:
    """A finite real number (not a bool) in [low, high] (or [low, high))."""
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(
            value, (int, float, numpy.integer, numpy.floating)):
        raise TypeError(f"{where}: {name} must be a number, got {value!r}")
    value = float(value)
    ok = low <= value < high if high_open else low <= value <= high
    if not ok or not math.isfinite(value):  # nan fails every comparison
        bound = f"[{low}, {high})" if high_open or high == math.inf else f"[{low}, {high}]"
        raise ValueError(f"{where}: {name}={value!r} is outside {bound}")
    return value


class _GroupAttribute:
    """``optimizer.<name>``: reads the first parameter group's value, sets every group's."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.param_groups[0][self.name]

    def __set__(self, obj: Any, value: Any) -> None:
        for group in obj.param_groups:
            group[self.name] = value


class Optimizer:
    """Holds parameters (Tensors with ``.data`` and ``.grad``) in ``param_groups`` and their
    state arrays (indexed by the parameter's position in ``params``, all groups in order)."""

    hyperparameters: tuple = ("lr",)
    lr = _GroupAttribute()

    def __init__(self, params: Iterable, defaults: dict[str, Any]) -> None:
        name = type(self).__name__
        for key, value in defaults.items():
            self._check_hyper(name, key, value)
        if isinstance(params, (dict, Tensor, str, bytes)):
            raise TypeError(f"{name}: params must be an iterable of Tensors or of dicts, "
                            f"got {type(params).__name__}")
        try:
            items = list(params)
        except TypeError:
            raise TypeError(f"{name}: params must be an iterable of Tensors or of dicts, "
                            f"got {type(params).__name__}") from None
        if not items:
            raise ValueError(f"{name}: got an empty parameter list")
        if all(isinstance(g, dict) for g in items):
            groups = items
        elif any(isinstance(g, dict) for g in items):
            raise TypeError(f"{name}: params mixes Tensors and parameter-group dicts")
        else:
            groups = [{"params": items}]
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        self.params: list = []
        seen: dict[int, int] = {}
        for g, group in enumerate(groups):
            where = f"{name}: param_groups[{g}]"
            if "params" not in group:
                raise ValueError(f"{where} has no 'params'")
            unknown = sorted(set(group) - {"params"} - set(defaults))
            if unknown:
                raise ValueError(f"{where} has unknown option(s) {unknown}; {name} takes "
                                 f"{sorted(defaults)}")
            members = group["params"]
            members = [members] if hasattr(members, "data") and hasattr(members, "grad") \
                else list(members)
            unique = []
            for p in members:
                if not (hasattr(p, "data") and hasattr(p, "grad")):
                    raise TypeError(f"{where}: params must be Tensors, got {type(p).__name__}")
                if id(p) in seen:
                    if seen[id(p)] != g:
                        raise ValueError(f"{where}: a parameter is already in "
                                         f"param_groups[{seen[id(p)]}]")
                    continue  # listed twice in one group: once (not stepped twice)
                seen[id(p)] = g
                unique.append(p)
            if not unique:
                raise ValueError(f"{where} has an empty parameter list")
            full = {"params": unique}
            for key, default in defaults.items():
                full[key] = self._check_hyper(where, key, group.get(key, default))
            self.param_groups.append(full)
            self.params.extend(unique)
        self._masters: dict[int, Array] = {}
        # the checked hyperparameters of the last step, and the values they were checked from
        self._checked: list[dict[str, Any]] = []
        self._checked_snapshot: list | None = None

    # ---- hyperparameters -----------------------------------------------------------------

    @staticmethod
    def _check_hyper(where: str, key: str, value: Any) -> Any:
        if key == "betas":
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise TypeError(f"{where}: betas must be a pair of numbers, got {value!r}")
            return tuple(_number(where, f"betas[{i}]", b, 0.0, 1.0, high_open=True)
                         for i, b in enumerate(value))
        if key == "nesterov":
            if not isinstance(value, (bool, numpy.bool_)):
                raise TypeError(f"{where}: nesterov must be a bool, got {value!r}")
            return bool(value)
        return _number(where, key, value)

    def _checked_groups(self) -> list[dict[str, Any]]:
        """Every group's hyperparameters checked (they may have been edited since the
        constructor; checked again only when they have been), and every gradient's shape,
        before anything is written."""
        name = type(self).__name__
        keys = self.hyperparameters
        snapshot = [tuple([tuple(v) if type(v) is list else v for v in map(group.get, keys)])
                    for group in self.param_groups]
        checked = self._checked
        try:
            unchanged = snapshot == self._checked_snapshot
        except (TypeError, ValueError):  # a value that does not compare (an array): check it
            unchanged = False
        if not unchanged:
            checked = []
            for g, group in enumerate(self.param_groups):
                where = f"{name}: param_groups[{g}]" if len(self.param_groups) > 1 else name
                values = {key: self._check_hyper(where, key, group[key])
                          for key in self.hyperparameters}
                self._check_group(where, values)
                checked.append(values)
            self._checked, self._checked_snapshot = checked, snapshot
        for i, p in enumerate(self.params):
            grad, data = p.grad, p.data
            if grad is not None and (grad.shape != data.shape or grad.dtype != data.dtype):
                raise ValueError(f"{name}.step: the gradient of parameter {i} has shape "
                                 f"{tuple(p.grad.shape)} and dtype {p.grad.dtype}; expected "
                                 f"{tuple(p.data.shape)} and {p.data.dtype}")
        return checked

    def _check_group(self, where: str, values: dict[str, Any]) -> None:
        pass

    def _group_indices(self) -> list[list[int]]:
        out, start = [], 0
        for group in self.param_groups:
            out.append(list(range(start, start + len(group["params"]))))
            start += len(group["params"])
        return out

    def _with_grads(self, index: list[int]) -> list[int]:
        return [i for i in index if self.params[i].grad is not None]

    # ---- float32 master weights of 16-bit parameters -------------------------------------

    def _is_16bit(self, i: int) -> bool:
        dtype = self.params[i].data.dtype
        return dtype.itemsize == 2 and dtype in SIXTEEN_BIT  # the size first: a quick no

    def _state_zeros(self, p: Any) -> Array:
        """A zero state array for parameter ``p``: float32 for a 16-bit parameter."""
        dtype = numpy.float32 if p.dtype in SIXTEEN_BIT else p.dtype
        return p.xp.zeros(p.shape, dtype=dtype)

    def _master(self, i: int) -> Array:
        """The float32 master of 16-bit parameter ``i`` (made from its data on first use)."""
        master = self._masters.get(i)
        if master is None:
            master = self._masters[i] = self.params[i].data.astype(numpy.float32)
        return master

    def _batches(self, index: list[int]) -> list[tuple[list[int], list | None]]:
        """The parameters of ``index`` as (positions, masters) per launch: the float32/64
        ones together (masters None), the 16-bit ones per dtype with their masters."""
        plain = [i for i in index if not self._is_16bit(i)]
        if len(plain) == len(index):  # no 16-bit parameter (the usual case): one batch
            return [(plain, None)] if plain else []
        out: list[tuple[list[int], list | None]] = [(plain, None)] if plain else []
        for dtype in SIXTEEN_BIT:
            half = [i for i in index if self.params[i].dtype == dtype]
            if half:
                out.append((half, [self._master(i) for i in half]))
        return out

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients (the next backward stores fresh ones), or zero them in place."""
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def step(self) -> None:
        """Update the parameters that have a gradient (each optimizer's own rule)."""
        raise NotImplementedError

    # ---- state dict ----------------------------------------------------------------------

    state_names: tuple = ()  # the per-parameter state arrays, saved as "<name>.<i>"

    def _state_lists(self) -> dict[str, list]:
        return {name: getattr(self, name) for name in self.state_names}

    def _master_state(self) -> dict[str, Array]:
        """``master.<i>`` for each 16-bit parameter i."""
        return {f"master.{i}": self._master(i) for i in range(len(self.params))
                if self._is_16bit(i)}

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        """A flat dict of NumPy values (storable with ``numpy.savez``): ``type`` (the class
        name), per group ``groups.<g>.params`` (the parameters' positions) and
        ``groups.<g>.<hyperparameter>``, and the state arrays ``<name>.<i>``, copied."""
        out: dict[str, Any] = {"type": numpy.array(type(self).__name__)}
        for g, (group, index) in enumerate(zip(self.param_groups, self._group_indices())):
            out[f"groups.{g}.params"] = numpy.array(index, dtype=numpy.int64)
            for key in self.hyperparameters:
                out[f"groups.{g}.{key}"] = numpy.array(group[key])
        out.update(self._extra_state())
        for name, arrays in self._state_lists().items():
            for i, a in enumerate(arrays):
                out[f"{name}.{i}"] = to_cpu(a).copy()
        for key, a in self._master_state().items():
            out[key] = to_cpu(a).copy()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load what :meth:`state_dict` gave (of an optimizer of the same class over
        parameters of the same shapes, grouped the same way): everything is checked first
        (ValueError naming the key) and nothing is changed on an error. Also accepts the
        older format (``lr`` and the arrays, one group)."""
        where = f"{type(self).__name__}.load_state_dict"
        if not hasattr(state, "keys"):
            raise TypeError(f"{where}: state must be a dict, got {type(state).__name__}")
        legacy = "type" not in state and "groups.0.params" not in state
        if not legacy:
            saved = str(numpy.asarray(state.get("type", "")))
            if saved != type(self).__name__:
                raise ValueError(f"{where}: the state is of a {saved or 'unknown'} optimizer, "
                                 f"not {type(self).__name__} (key 'type')")
        expected = self._expected_keys(legacy)
        missing = [k for k in expected if k not in state]
        unexpected = sorted(k for k in state if k not in set(expected))
        if missing or unexpected:
            raise ValueError(f"{where}: missing keys {missing}, unexpected keys {unexpected} "
                             f"(another optimizer's state, or another model's?)")
        # groups: same partition of the parameters, valid hyperparameters
        hypers: list[dict[str, Any]] = []
        for g, index in enumerate(self._group_indices()):
            if legacy:
                lr = self._check_hyper(f"{where}: key 'lr'", "lr",
                                       _value(where, "lr", state["lr"], False))
                hypers.append({"lr": lr})
                continue
            key = f"groups.{g}.params"
            saved_index = numpy.asarray(state[key]).reshape(-1).tolist()
            if saved_index != index:
                raise ValueError(f"{where}: {key} is {saved_index}; this optimizer's group {g} "
                                 f"holds parameters {index}")
            values = {}
            for name in self.hyperparameters:
                key = f"groups.{g}.{name}"
                values[name] = self._check_hyper(f"{where}: key '{key}'", name,
                                                 _value(where, key, state[key], name == "betas"))
            hypers.append(values)
        arrays: dict[str, list] = {}
        for name, current in self._state_lists().items():
            arrays[name] = []
            for i, a in enumerate(current):
                key = f"{name}.{i}"
                value = numpy.asarray(state[key])
                if value.shape != tuple(a.shape):
                    raise ValueError(f"{where}: {key} has shape {value.shape}; expected "
                                     f"{tuple(a.shape)}")
                if not numpy.issubdtype(value.dtype, numpy.number):
                    raise ValueError(f"{where}: {key} has dtype {value.dtype}; expected numbers")
                arrays[name].append(value)
        masters = {}
        for key, a in self._master_state().items():
            value = numpy.asarray(state[key])
            if value.shape != tuple(a.shape) or not numpy.issubdtype(value.dtype, numpy.floating):
                raise ValueError(f"{where}: {key} has shape {value.shape} and dtype "
                                 f"{value.dtype}; expected {tuple(a.shape)} float32")
            masters[int(key.split(".")[1])] = value
        extra = self._check_extra_state(where, state)
        # commit
        for group, values in zip(self.param_groups, hypers):
            group.update(values)
        for name, current in self._state_lists().items():
            for a, value in zip(current, arrays[name]):
                a[...] = _to_like(value, a)
        for i, value in masters.items():
            self._masters[i][...] = _to_like(value, self._masters[i])
            self.params[i].data[...] = self._masters[i].astype(self.params[i].dtype)
        self._load_extra_state(extra)

    def _expected_keys(self, legacy: bool) -> list[str]:
        keys = ["lr"] if legacy else ["type"]
        if not legacy:
            for g in range(len(self.param_groups)):
                keys += [f"groups.{g}.params"] + [f"groups.{g}.{k}" for k in self.hyperparameters]
        keys += list(self._extra_state())
        for name, arrays in self._state_lists().items():
            keys += [f"{name}.{i}" for i in range(len(arrays))]
        keys += list(self._master_state())
        return keys

    def _check_extra_state(self, where: str, state: dict[str, Any]) -> Any:
        return None

    def _load_extra_state(self, extra: Any) -> None:
        pass


def _value(where: str, key: str, value: Any, pair: bool) -> Any:
    """A saved hyperparameter: a scalar, or (``pair``) a tuple of numbers."""
    array = numpy.asarray(value)
    if pair:
        return tuple(array.reshape(-1).tolist())
    if array.shape != ():
        raise ValueError(f"{where}: {key} must be a scalar, got shape {array.shape}")
    return array.item()


def _to_like(value: numpy.ndarray, like: Array) -> Array:
    return get_array_module(like).asarray(value, dtype=like.dtype)


class SGD(Optimizer):
    """``torch.optim.SGD`` (dampening 0) through :func:`sgd_step`."""

    hyperparameters = ("lr", "momentum", "nesterov", "weight_decay")
    momentum = _GroupAttribute()
    nesterov = _GroupAttribute()
    weight_decay = _GroupAttribute()

    def __init__(self, params: Iterable, lr: float = 1e-3, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov,
                                      weight_decay=weight_decay))
        for g, group in enumerate(self.param_groups):
            where = f"SGD: param_groups[{g}]" if len(self.param_groups) > 1 else "SGD"
            self._check_group(where, group)
        self.velocities: list = []
        if any(group["momentum"] for group in self.param_groups):
            self.velocities = [self._state_zeros(p) for p in self.params]

    def _check_group(self, where: str, values: dict[str, Any]) -> None:
        if values["nesterov"] and values["momentum"] == 0:
            raise ValueError(f"{where}: nesterov=True needs momentum > 0 "
                             f"(got momentum={values['momentum']})")

    def step(self) -> None:
        checked = self._checked_groups()
        if any(values["momentum"] for values in checked) and not self.velocities:
            self.velocities = [self._state_zeros(p) for p in self.params]
        for values, index in zip(checked, self._group_indices()):
            for idx, masters in self._batches(self._with_grads(index)):
                sgd_step([self.params[i].data for i in idx], [self.params[i].grad for i in idx],
                         [self.velocities[i] for i in idx] if values["momentum"] else None,
                         lr=values["lr"], momentum=values["momentum"],
                         nesterov=values["nesterov"], weight_decay=values["weight_decay"],
                         master_params=masters)

    state_names = ("velocities",)


class Adam(Optimizer):
    """``torch.optim.Adam`` (L2 weight decay added to the gradient) through :func:`adam_step`."""

    decoupled = False
    hyperparameters = ("lr", "betas", "eps", "weight_decay")
    betas = _GroupAttribute()
    eps = _GroupAttribute()
    weight_decay = _GroupAttribute()
    state_names = ("m", "v")

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.m = [self._state_zeros(p) for p in self.params]
        self.v = [self._state_zeros(p) for p in self.params]
        # One step counter per parameter, like torch (a parameter without a gradient
        # is skipped and does not advance).
        self.steps = [0] * len(self.params)

    def step(self) -> None:
        checked = self._checked_groups()
        for values, index in zip(checked, self._group_indices()):
            # By step count so each fused launch has one bias correction (usually one batch).
            batches: dict[int, list[int]] = {}
            for i in self._with_grads(index):
                batches.setdefault(self.steps[i] + 1, []).append(i)
            for step, same_step in batches.items():
                for batch, masters in self._batches(same_step):
                    adam_step([self.params[i].data for i in batch],
                              [self.params[i].grad for i in batch],
                              [self.m[i] for i in batch], [self.v[i] for i in batch], step=step,
                              lr=values["lr"], beta1=values["betas"][0],
                              beta2=values["betas"][1], eps=values["eps"],
                              weight_decay=values["weight_decay"], decoupled=self.decoupled,
                              master_params=masters)
                    for i in batch:  # counted once the update is done
                        self.steps[i] = step

    def _extra_state(self) -> dict[str, Any]:
        return {"steps": numpy.array(self.steps, dtype=numpy.int64)}

    def _check_extra_state(self, where: str, state: dict[str, Any]) -> Any:
        steps = numpy.asarray(state["steps"]).reshape(-1)
        if steps.shape != (len(self.params),) or not numpy.issubdtype(steps.dtype, numpy.integer) \
                or (steps < 0).any():
            raise ValueError(f"{where}: steps must be {len(self.params)} counts >= 0 (one per "
                             f"parameter), got {numpy.asarray(state['steps'])!r}")
        return [int(s) for s in steps]

    def _load_extra_state(self, extra: Any) -> None:
        self.steps = extra


class AdamW(Adam):
    """``torch.optim.AdamW``: decoupled weight decay (default 0.01, as torch)."""

    decoupled = True

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)


from . import lr_scheduler  # noqa: E402  (the schedulers act on the classes above)

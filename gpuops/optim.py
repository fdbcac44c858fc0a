"""Optimizers: ``SGD``, ``Adam`` and ``AdamW`` hold parameters (Tensors) and their state and
step through the fused operators :func:`gpuops.sgd_step` and :func:`gpuops.adam_step`
(:mod:`gpuops.ops.optim`), with the exact rules of ``torch.optim``.

Parameters come as an iterable of Tensors or, as in torch, an iterable of dicts
(``{"params": [...], "lr": ..., ...}``), each a *parameter group* with its own
hyperparameters (the constructor's arguments fill in those a group leaves out). They are
in ``optimizer.param_groups``, a list of such dicts, which may be edited between steps
(e.g. by a learning-rate scheduler); ``optimizer.lr`` (and the other hyperparameter
attributes) read the first group and set every group.
"""
from __future__ import annotations

import bisect
import math
import sys
import types
from typing import Any, Iterable

import numpy

from .autograd import Tensor
from .backend import get_array_module, to_cpu
from .ops.optim import adam_step, sgd_step

__all__ = ["sgd_step", "adam_step", "Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]

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
        constructor), and every gradient's shape, before anything is written."""
        name = type(self).__name__
        checked = []
        for g, group in enumerate(self.param_groups):
            where = f"{name}: param_groups[{g}]" if len(self.param_groups) > 1 else name
            values = {key: self._check_hyper(where, key, group[key])
                      for key in self.hyperparameters}
            self._check_group(where, values)
            checked.append(values)
        for i, p in enumerate(self.params):
            if p.grad is not None and (tuple(p.grad.shape) != tuple(p.data.shape)
                                       or p.grad.dtype != p.data.dtype):
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
        extra = self._check_extra_state(where, state)
        # commit
        for group, values in zip(self.param_groups, hypers):
            group.update(values)
        for name, current in self._state_lists().items():
            for a, value in zip(current, arrays[name]):
                a[...] = _to_like(value, a)
        self._load_extra_state(extra)

    def _expected_keys(self, legacy: bool) -> list[str]:
        keys = ["lr"] if legacy else ["type"]
        if not legacy:
            for g in range(len(self.param_groups)):
                keys += [f"groups.{g}.params"] + [f"groups.{g}.{k}" for k in self.hyperparameters]
        keys += list(self._extra_state())
        for name, arrays in self._state_lists().items():
            keys += [f"{name}.{i}" for i in range(len(arrays))]
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
            self.velocities = [p.xp.zeros_like(p.data) for p in self.params]

    def _check_group(self, where: str, values: dict[str, Any]) -> None:
        if values["nesterov"] and values["momentum"] == 0:
            raise ValueError(f"{where}: nesterov=True needs momentum > 0 "
                             f"(got momentum={values['momentum']})")

    def step(self) -> None:
        checked = self._checked_groups()
        if any(values["momentum"] for values in checked) and not self.velocities:
            self.velocities = [p.xp.zeros_like(p.data) for p in self.params]
        for values, index in zip(checked, self._group_indices()):
            idx = self._with_grads(index)
            if not idx:
                continue
            sgd_step([self.params[i].data for i in idx], [self.params[i].grad for i in idx],
                     [self.velocities[i] for i in idx] if values["momentum"] else None,
                     lr=values["lr"], momentum=values["momentum"],
                     nesterov=values["nesterov"], weight_decay=values["weight_decay"])

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
        self.m = [p.xp.zeros_like(p.data) for p in self.params]
        self.v = [p.xp.zeros_like(p.data) for p in self.params]
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
            for step, batch in batches.items():
                adam_step([self.params[i].data for i in batch],
                          [self.params[i].grad for i in batch],
                          [self.m[i] for i in batch], [self.v[i] for i in batch], step=step,
                          lr=values["lr"], beta1=values["betas"][0], beta2=values["betas"][1],
                          eps=values["eps"], weight_decay=values["weight_decay"],
                          decoupled=self.decoupled)
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




# ---- learning-rate schedulers: gpuops.optim.lr_scheduler ----------------------------------------
#
# The formulas, the recursive updates and the bookkeeping (initial_lr in each group, the step
# done by the constructor, last_epoch, get_last_lr, step(epoch) by the closed form) are
# torch.optim.lr_scheduler's (PyTorch 2.x), so a schedule gives torch's learning rates.

def _positive_int(where: str, name: str, value: Any) -> int:
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, (int, numpy.integer)):
        raise TypeError(f"{where}: {name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{where}: {name} must be >= 1, got {value!r}")
    return int(value)


class LRScheduler:
    """Base class (``torch.optim.lr_scheduler.LRScheduler``): sets each group's ``lr``.

    ``last_epoch=-1`` (a new schedule) records each group's ``lr`` as ``initial_lr`` (unless
    already there) and sets the epoch-0 rates; another value resumes (the groups must hold
    ``initial_lr``). ``step()`` after each ``optimizer.step()`` moves to the next epoch.
    """

    _is_initial = False

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        name = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: {type(optimizer).__name__} is not a gpuops.optim "
                            "Optimizer")
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, (int, numpy.integer)) \
                or last_epoch < -1:
            raise ValueError(f"{name}: last_epoch must be an int >= -1, got {last_epoch!r}")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"{name}: param 'initial_lr' is not specified in "
                                   f"param_groups[{i}] when resuming with last_epoch >= 0")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = int(last_epoch)
        self._initial_step()

    def _initial_step(self) -> None:
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> list[float]:
        raise NotImplementedError

    def get_last_lr(self) -> list[float]:
        """The learning rates the last step set (one per parameter group)."""
        return self._last_lr

    def step(self, epoch: int | None = None) -> None:
        """Next epoch (recursive rule), or (deprecated in torch) jump to ``epoch``
        (closed form where there is one)."""
        self._step_count += 1
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = epoch
            closed = getattr(self, "_get_closed_form_lr", None)
            values = closed() if closed is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Every attribute but the optimizer (as torch)."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class StepLR(LRScheduler):
    """``lr = base_lr · gamma^⌊epoch / step_size⌋`` (multiplies by gamma every step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self.step_size = _positive_int("StepLR", "step_size", step_size)
        self.gamma = _number("StepLR", "gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return [group["lr"] for group in self.optimizer.param_groups]
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size)
                for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    """``lr = base_lr · (start_factor + (end_factor - start_factor) · min(epoch, total_iters)
    / total_iters)``: a linear warmup (or decay) over ``total_iters`` epochs."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5, last_epoch: int = -1) -> None:
        start_factor = _number("LinearLR", "start_factor", start_factor, 0.0, 1.0)
        if start_factor == 0:
            raise ValueError("LinearLR: start_factor=0.0 is outside (0, 1]")
        self.start_factor = start_factor
        self.end_factor = _number("LinearLR", "end_factor", end_factor, 0.0, 1.0)
        self.total_iters = _positive_int("LinearLR", "total_iters", total_iters)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0:
            return [group["lr"] * self.start_factor for group in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return [group["lr"] for group in self.optimizer.param_groups]
        return [group["lr"] * (1.0 + (self.end_factor - self.start_factor) / (
            self.total_iters * self.start_factor
            + (self.last_epoch - 1) * (self.end_factor - self.start_factor)))
            for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [base_lr * (self.start_factor + (self.end_factor - self.start_factor)
                           * min(self.total_iters, self.last_epoch) / self.total_iters)
                for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """``lr = eta_min + (base_lr - eta_min) · (1 + cos(π · epoch / T_max)) / 2`` (torch's
    recursive form; without restarts, so it rises again after T_max)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,
                 last_epoch: int = -1) -> None:
        self.T_max = _positive_int("CosineAnnealingLR", "T_max", T_max)
        self.eta_min = _number("CosineAnnealingLR", "eta_min", eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        groups = self.optimizer.param_groups
        if self._is_initial:
            return [group["lr"] for group in groups]
        if self._step_count == 1 and self.last_epoch > 0:
            return [self.eta_min + (base_lr - self.eta_min)
                    * (1 + math.cos(self.last_epoch * math.pi / self.T_max)) / 2
                    for base_lr in self.base_lrs]
        if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
            return [group["lr"] + (base_lr - self.eta_min)
                    * (1 - math.cos(math.pi / self.T_max)) / 2
                    for base_lr, group in zip(self.base_lrs, groups)]
        return [(1 + math.cos(math.pi * self.last_epoch / self.T_max))
                / (1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max))
                * (group["lr"] - self.eta_min) + self.eta_min for group in groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [self.eta_min + (base_lr - self.eta_min)
                * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base_lr in self.base_lrs]


class SequentialLR(LRScheduler):
    """Runs ``schedulers[i]`` from ``milestones[i-1]`` on (each restarted at its epoch 0).
    Cosine with linear warmup: ``SequentialLR(opt, [LinearLR(opt, 0.01, 1.0, W),
    CosineAnnealingLR(opt, T - W)], milestones=[W])``."""

    def __init__(self, optimizer: Optimizer, schedulers: list, milestones: list,
                 last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"SequentialLR: {type(optimizer).__name__} is not a gpuops.optim "
                            "Optimizer")
        schedulers, milestones = list(schedulers), list(milestones)
        if not schedulers:
            raise ValueError("SequentialLR: expects at least one scheduler, got none")
        for i, scheduler in enumerate(schedulers):
            if not isinstance(scheduler, LRScheduler):
                raise TypeError(f"SequentialLR: schedulers[{i}] is a "
                                f"{type(scheduler).__name__}, not a scheduler")
            if scheduler.optimizer is not optimizer:
                raise ValueError(f"SequentialLR: schedulers[{i}] "
                                 f"({type(scheduler).__name__}) belongs to another optimizer")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR: {len(schedulers)} schedulers need "
                             f"{len(schedulers) - 1} milestones, got {len(milestones)}")
        for i, m in enumerate(milestones):
            _positive_int("SequentialLR", f"milestones[{i}]", m)
        if milestones != sorted(milestones):
            raise ValueError(f"SequentialLR: milestones must be increasing, got {milestones}")
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for group in optimizer.param_groups:  # back to the initial rates
            group["lr"] = group["initial_lr"]
        self._recursive_undo(self)  # undo the steps the schedulers' constructors made
        idx = bisect.bisect_right(self._milestones, 0)
        self._schedulers[idx]._initial_step()
        self._last_lr = self._schedulers[idx].get_last_lr()

    def _recursive_undo(self, sched: Any) -> None:
        if sched is not self and not hasattr(sched, "_schedulers"):
            sched.last_epoch -= 1
            return
        for s in sched._schedulers:
            self._recursive_undo(s)

    def step(self, epoch: int | None = None) -> None:
        if epoch is not None:
            raise TypeError("SequentialLR.step takes no epoch")
        self.last_epoch += 1
        idx = bisect.bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items()
                 if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        schedulers = state.pop("_schedulers")
        self.__dict__.update(state)
        for s, saved in zip(self._schedulers, schedulers):
            s.load_state_dict(saved)


class OneCycleLR(LRScheduler):
    """The 1cycle policy (``torch.optim.lr_scheduler.OneCycleLR``), stepped once per batch:
    from ``max_lr/div_factor`` up to ``max_lr`` over the first ``pct_start`` of
    ``total_steps``, then down to ``max_lr/(div_factor·final_div_factor)`` (``three_phase``:
    up, back down to the start, then down to the minimum), by cosine or linear annealing;
    ``cycle_momentum`` moves SGD's ``momentum`` (Adam's β1) the opposite way between
    ``max_momentum`` and ``base_momentum``."""

    def __init__(self, optimizer: Optimizer, max_lr: Any, total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None,
                 pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = True, base_momentum: Any = 0.85,
                 max_momentum: Any = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False,
                 last_epoch: int = -1) -> None:
        where = "OneCycleLR"
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{where}: {type(optimizer).__name__} is not a gpuops.optim "
                            "Optimizer")
        self.optimizer = optimizer
        if total_steps is not None:
            self.total_steps = _positive_int(where, "total_steps", total_steps)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = (_positive_int(where, "epochs", epochs)
                                * _positive_int(where, "steps_per_epoch", steps_per_epoch))
        else:
            raise ValueError(f"{where}: give total_steps, or epochs and steps_per_epoch")
        pct_start = _number(where, "pct_start", pct_start, 0.0, 1.0)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"{where}: anneal_strategy must be 'cos' or 'linear', "
                             f"got {anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        div_factor = _number(where, "div_factor", div_factor)
        final_div_factor = _number(where, "final_div_factor", final_div_factor)
        if div_factor == 0 or final_div_factor == 0:
            raise ValueError(f"{where}: div_factor and final_div_factor must be > 0")
        self._schedule_phases: list[dict[str, Any]]
        if three_phase:
            self._schedule_phases = [
                {"end_step": float(pct_start * self.total_steps) - 1, "start_lr": "initial_lr",
                 "end_lr": "max_lr", "start_momentum": "max_momentum",
                 "end_momentum": "base_momentum"},
                {"end_step": float(2 * pct_start * self.total_steps) - 2, "start_lr": "max_lr",
                 "end_lr": "initial_lr", "start_momentum": "base_momentum",
                 "end_momentum": "max_momentum"},
                {"end_step": self.total_steps - 1, "start_lr": "initial_lr",
                 "end_lr": "min_lr", "start_momentum": "max_momentum",
                 "end_momentum": "max_momentum"}]
        else:
            self._schedule_phases = [
                {"end_step": float(pct_start * self.total_steps) - 1, "start_lr": "initial_lr",
                 "end_lr": "max_lr", "start_momentum": "max_momentum",
                 "end_momentum": "base_momentum"},
                {"end_step": self.total_steps - 1, "start_lr": "max_lr", "end_lr": "min_lr",
                 "start_momentum": "base_momentum", "end_momentum": "max_momentum"}]
        max_lrs = self._per_group("max_lr", max_lr, 0.0, math.inf)
        if last_epoch == -1:
            for lr, group in zip(max_lrs, optimizer.param_groups):
                group["initial_lr"] = lr / div_factor
                group["max_lr"] = lr
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = bool(cycle_momentum)
        if self.cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError(f"{where}: cycle_momentum needs an optimizer with momentum "
                                 "or betas")
            self.use_beta1 = "betas" in optimizer.defaults
            maxes = self._per_group("max_momentum", max_momentum, 0.0, 1.0)
            bases = self._per_group("base_momentum", base_momentum, 0.0, 1.0)
            if last_epoch == -1:
                for m, b, group in zip(maxes, bases, optimizer.param_groups):
                    if self.use_beta1:
                        group["betas"] = (m, *group["betas"][1:])
                    else:
                        group["momentum"] = m
                    group["max_momentum"] = m
                    group["base_momentum"] = b
        super().__init__(optimizer, last_epoch)

    def _per_group(self, name: str, value: Any, low: float, high: float) -> list[float]:
        groups = self.optimizer.param_groups
        if isinstance(value, (list, tuple)):
            if len(value) != len(groups):
                raise ValueError(f"OneCycleLR: {name} has {len(value)} values for "
                                 f"{len(groups)} parameter groups")
            return [_number("OneCycleLR", f"{name}[{i}]", v, low, high)
                    for i, v in enumerate(value)]
        return [_number("OneCycleLR", name, value, low, high)] * len(groups)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> list[float]:
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise ValueError(f"OneCycleLR: tried to step {step_num} times; total_steps is "
                             f"{self.total_steps}")
        lrs = []
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step_num <= end_step or i == len(self._schedule_phases) - 1:
                    pct = (step_num - start_step) / (end_step - start_step)
                    lr = self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct)
                    if self.cycle_momentum:
                        momentum = self._anneal(group[phase["start_momentum"]],
                                                group[phase["end_momentum"]], pct)
                    break
                start_step = phase["end_step"]
            lrs.append(lr)
            if self.cycle_momentum:
                if self.use_beta1:
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum
        return lrs


lr_scheduler = types.ModuleType(__name__ + ".lr_scheduler", "Learning-rate schedulers "
                                "(torch.optim.lr_scheduler's formulas).")
for _cls in (LRScheduler, StepLR, LinearLR, CosineAnnealingLR, SequentialLR, OneCycleLR):
    setattr(lr_scheduler, _cls.__name__, _cls)
lr_scheduler.__all__ = ["LRScheduler", "StepLR", "LinearLR", "CosineAnnealingLR",  # type: ignore[attr-defined]
                        "SequentialLR", "OneCycleLR"]
sys.modules[lr_scheduler.__name__] = lr_scheduler  # import gpuops.optim.lr_scheduler works
del _cls

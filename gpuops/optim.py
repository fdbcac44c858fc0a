"""Optimizers: ``SGD``, ``Adam`` and ``AdamW`` hold parameters (Tensors) and their state and
step through the fused operators :func:`gpuops.sgd_step` and :func:`gpuops.adam_step`
(:mod:`gpuops.ops.optim`), with the exact rules of ``torch.optim``."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy

from .backend import get_array_module, to_cpu
from .ops.optim import adam_step, sgd_step

__all__ = ["sgd_step", "adam_step", "Optimizer", "SGD", "Adam", "AdamW"]

Array = Any


class Optimizer:
    """Holds parameters (Tensors with ``.data`` and ``.grad``) and their state arrays."""

    def __init__(self, params: Iterable, lr: float) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        self.lr = lr

    def _with_grads(self) -> list[int]:
        return [i for i, p in enumerate(self.params) if p.grad is not None]

    def zero_grad(self) -> None:
        """Drop the gradients (the next backward stores fresh ones)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update the parameters that have a gradient (each optimizer's own rule)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _state_arrays(self, name: str) -> list:
        return getattr(self, name)

    def _save(self, names: Sequence[str], extra: dict) -> dict[str, Any]:
        out = dict(extra)
        for name in names:
            for i, a in enumerate(self._state_arrays(name)):
                out[f"{name}.{i}"] = to_cpu(a).copy()
        return out

    def _load(self, names: Sequence[str], state: dict[str, Any]) -> None:
        for name in names:
            arrays = self._state_arrays(name)
            for i, a in enumerate(arrays):
                key = f"{name}.{i}"
                if key not in state:
                    raise ValueError(f"{type(self).__name__}.load_state_dict: missing {key}")
                value = numpy.asarray(state[key])
                if value.shape != tuple(a.shape):
                    raise ValueError(f"{type(self).__name__}.load_state_dict: {key} has shape "
                                     f"{value.shape}; expected {tuple(a.shape)}")
                a[...] = _to_like(value, a)


def _to_like(value: numpy.ndarray, like: Array) -> Array:
    return get_array_module(like).asarray(value, dtype=like.dtype)


class SGD(Optimizer):
    """``torch.optim.SGD`` (dampening 0) through :func:`sgd_step`."""

    def __init__(self, params: Iterable, lr: float = 1e-3, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay
        self.velocities = [p.xp.zeros_like(p.data) for p in self.params] if momentum else []

    def step(self) -> None:
        idx = self._with_grads()
        sgd_step([self.params[i].data for i in idx], [self.params[i].grad for i in idx],
                 [self.velocities[i] for i in idx] if self.momentum else None, lr=self.lr,
                 momentum=self.momentum, nesterov=self.nesterov, weight_decay=self.weight_decay)

    def state_dict(self) -> dict[str, Any]:
        return self._save(["velocities"], {"lr": self.lr})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load(["velocities"], state)
        self.lr = float(state["lr"])


class Adam(Optimizer):
    """``torch.optim.Adam`` (L2 weight decay added to the gradient) through :func:`adam_step`."""

    decoupled = False

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = tuple(betas), eps, weight_decay
        self.m = [p.xp.zeros_like(p.data) for p in self.params]
        self.v = [p.xp.zeros_like(p.data) for p in self.params]
        # One step counter per parameter, like torch (a parameter without a gradient
        # is skipped and does not advance).
        self.steps = [0] * len(self.params)

    def step(self) -> None:
        idx = self._with_grads()
        # Group by step count so each fused launch has one bias correction (usually one group).
        groups: dict[int, list[int]] = {}
        for i in idx:
            self.steps[i] += 1
            groups.setdefault(self.steps[i], []).append(i)
        for step, group in groups.items():
            adam_step([self.params[i].data for i in group], [self.params[i].grad for i in group],
                      [self.m[i] for i in group], [self.v[i] for i in group], step=step,
                      lr=self.lr, beta1=self.betas[0], beta2=self.betas[1], eps=self.eps,
                      weight_decay=self.weight_decay, decoupled=self.decoupled)

    def state_dict(self) -> dict[str, Any]:
        return self._save(["m", "v"], {"lr": self.lr, "steps": numpy.array(self.steps)})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load(["m", "v"], state)
        self.lr = float(state["lr"])
        self.steps = [int(s) for s in numpy.asarray(state["steps"]).reshape(-1)]


class AdamW(Adam):
    """``torch.optim.AdamW``: decoupled weight decay (default 0.01, as torch)."""

    decoupled = True

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)

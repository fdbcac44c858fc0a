"""Learning-rate schedulers with the formulas, recursive updates and bookkeeping of
``torch.optim.lr_scheduler`` (PyTorch 2.x): ``initial_lr`` in each group, the step done by
the constructor, ``last_epoch``, ``get_last_lr``, ``step(epoch)`` by the closed form; so a
schedule gives torch's learning rates."""
from __future__ import annotations

import bisect
import math
from typing import Any

import numpy

from . import Optimizer, _number

__all__ = ["LRScheduler", "StepLR", "LinearLR", "CosineAnnealingLR", "SequentialLR",
           "OneCycleLR", "WarmupCosineLR"]


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


class WarmupCosineLR(LRScheduler):
    """Linear warmup, then cosine decay: the GPT-2 schedule of llm.c and build-nanogpt
    (``get_lr`` of train_gpt2.py), stepped once per optimizer step. With ``W`` =
    ``warmup_steps``, ``T`` = ``total_steps``:

    - ``epoch < W``: ``lr = base_lr · (epoch + 1) / W`` (never 0; ``base_lr`` at ``W - 1``);
    - ``W <= epoch <= T``: ``lr = min_lr + (base_lr - min_lr) · (1 + cos(π (epoch - W) /
      (T - W))) / 2`` (``base_lr`` at ``W``, ``min_lr`` at ``T``);
    - ``epoch > T``: ``lr = min_lr``.

    ``min_lr`` is absolute, for every group (like ``CosineAnnealingLR``'s ``eta_min``).
    The same as ``torch.optim.lr_scheduler.LambdaLR`` with that factor divided by
    ``base_lr``; every step uses the closed form (no drift over long runs).
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int,
                 min_lr: float = 0.0, last_epoch: int = -1) -> None:
        where = "WarmupCosineLR"
        if isinstance(warmup_steps, (bool, numpy.bool_)) or not isinstance(
                warmup_steps, (int, numpy.integer)):
            raise TypeError(f"{where}: warmup_steps must be an int, got {warmup_steps!r}")
        if warmup_steps < 0:
            raise ValueError(f"{where}: warmup_steps must be >= 0, got {warmup_steps!r}")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = _positive_int(where, "total_steps", total_steps)
        if self.total_steps <= self.warmup_steps:
            raise ValueError(f"{where}: total_steps={self.total_steps} must exceed "
                             f"warmup_steps={self.warmup_steps}")
        self.min_lr = _number(where, "min_lr", min_lr)
        super().__init__(optimizer, last_epoch)

    def _lr(self, base_lr: float) -> float:
        epoch, warmup, total = self.last_epoch, self.warmup_steps, self.total_steps
        if epoch < warmup:
            return base_lr * (epoch + 1) / warmup
        if epoch > total:
            return self.min_lr
        decay = (epoch - warmup) / (total - warmup)
        return self.min_lr + (base_lr - self.min_lr) * (1 + math.cos(math.pi * decay)) / 2

    def get_lr(self) -> list[float]:
        return [self._lr(base_lr) for base_lr in self.base_lrs]

    _get_closed_form_lr = get_lr

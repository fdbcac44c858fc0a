"""The CuPy launcher: compiles each family with NVRTC through ``cupy.RawModule`` and
launches its kernels on the current GPU (the :class:`gpuops.kernels.Launcher` interface).

A launch is on the path of every operator call, so it does no more than read the
current device's number (one runtime call, no ``cupy.cuda.Device`` object), find the
kernel's function in that device's table and call it. What a device answers once is
asked once: its multiprocessor count (``max_blocks``) and compute capability
(``tensor_cores``) when the device is first used, each module when its family is first
launched there, each function handle when its kernel is first launched there.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Sequence

from .kernels import NVRTC_OPTIONS, source

__all__ = ["CupyLauncher", "cache_dir"]

# Grid-stride kernels need no more resident blocks than this many per multiprocessor.
BLOCKS_PER_SM = 32


class _DeviceState:
    """What one device answers once: its geometry, and the modules and function handles
    compiled and loaded for it."""

    def __init__(self, device: Any) -> None:
        self.max_blocks = int(device.attributes["MultiProcessorCount"]) * BLOCKS_PER_SM
        # The float16 tensor-core GEMM uses mma.sync.m16n8k16, an sm_80 (Ampere) instruction.
        self.tensor_cores = int(device.compute_capability) >= 80
        self.modules: dict[str, Any] = {}  # family -> cupy.RawModule
        self.functions: dict[tuple[str, str], Any] = {}  # (family, kernel) -> cupy.RawKernel


class CupyLauncher:
    """Compiles each family with NVRTC through ``cupy.RawModule`` and launches on the GPU.

    Modules are built once per (device, family) and memoized; CuPy's on-disk
    cache (``CUPY_CACHE_DIR``) makes a second process skip the compile.
    """

    name = "cupy"

    def __init__(self) -> None:
        import cupy
        self._cupy = cupy
        self._get_device = cupy.cuda.runtime.getDevice
        self._devices: dict[int, _DeviceState] = {}
        self._lock = threading.Lock()  # guards first uses (device state, compiles, handles)

    def _state(self) -> _DeviceState:
        """The current device's state (built on its first use, the one ``Device`` object)."""
        device_id = self._get_device()
        state = self._devices.get(device_id)
        if state is None:
            with self._lock:
                state = self._devices.get(device_id)
                if state is None:
                    state = self._devices[device_id] = _DeviceState(
                        self._cupy.cuda.Device(device_id))
        return state

    @property
    def max_blocks(self) -> int:
        return self._state().max_blocks

    @property
    def tensor_cores(self) -> bool:
        return self._state().tensor_cores

    def module(self, family: str) -> Any:
        """The compiled module of ``cuda/<family>.cu`` on the current device."""
        state = self._state()
        module = state.modules.get(family)
        if module is None:
            with self._lock:  # one compile per module even when threads race here
                module = state.modules.get(family)
                if module is None:
                    module = self._cupy.RawModule(code=source(family), options=NVRTC_OPTIONS)
                    module.compile()
                    state.modules[family] = module
        return module

    def launch(self, family: str, kernel: str, grid: Sequence[int], block: Sequence[int],
               args: Sequence[Any], shared_mem: int = 0) -> None:
        state = self._devices.get(self._get_device())
        function = None if state is None else state.functions.get((family, kernel))
        if function is None:
            function = self._function(family, kernel)
        function(tuple(grid), tuple(block), tuple(args), shared_mem=shared_mem)

    def _function(self, family: str, kernel: str) -> Any:
        """The handle of ``kernel`` on the current device, looked up once: CuPy's
        ``RawModule.get_function`` builds a new object on every call."""
        module = self.module(family)
        state = self._state()
        with self._lock:
            function = state.functions.get((family, kernel))
            if function is None:
                function = state.functions[(family, kernel)] = module.get_function(kernel)
        return function


def cache_dir() -> str:
    """CuPy's kernel cache directory (where compiled modules persist across processes)."""
    return os.environ.get("CUPY_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cupy",
                                                         "kernel_cache"))

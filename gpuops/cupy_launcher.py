"""The CuPy launcher: compiles each family with NVRTC through ``cupy.RawModule`` and
launches its kernels on the current GPU (the :class:`gpuops.kernels.Launcher` interface)."""
from __future__ import annotations

import os
import threading
from typing import Any, Sequence

from .kernels import NVRTC_OPTIONS, source

__all__ = ["CupyLauncher", "cache_dir"]


class CupyLauncher:
    """Compiles each family with NVRTC through ``cupy.RawModule`` and launches on the GPU.

    Modules are built once per (device, family) and memoized; CuPy's on-disk
    cache (``CUPY_CACHE_DIR``) makes a second process skip the compile.
    """

    name = "cupy"

    def __init__(self) -> None:
        import cupy
        self._cupy = cupy
        self._modules: dict[tuple[int, str], Any] = {}
        self._lock = threading.Lock()
        self._max_blocks: dict[int, int] = {}
        self._functions: dict[tuple[int, str, str], Any] = {}

    @property
    def max_blocks(self) -> int:
        device = self._cupy.cuda.Device()
        if device.id not in self._max_blocks:
            sms = device.attributes["MultiProcessorCount"]
            self._max_blocks[device.id] = sms * 32
        return self._max_blocks[device.id]

    @property
    def tensor_cores(self) -> bool:
        """The float16 tensor-core GEMM uses mma.sync.m16n8k16, an sm_80 (Ampere) instruction."""
        return int(self._cupy.cuda.Device().compute_capability) >= 80

    def module(self, family: str) -> Any:
        key = (self._cupy.cuda.Device().id, family)
        module = self._modules.get(key)
        if module is None:
            with self._lock:  # one compile per module even when threads race here
                module = self._modules.get(key)
                if module is None:
                    module = self._cupy.RawModule(code=source(family), options=NVRTC_OPTIONS)
                    module.compile()
                    self._modules[key] = module
        return module

    def launch(self, family: str, kernel: str, grid: Sequence[int], block: Sequence[int],
               args: Sequence[Any], shared_mem: int = 0) -> None:
        key = (self._cupy.cuda.runtime.getDevice(), family, kernel)
        function = self._functions.get(key)
        if function is None:  # RawModule.get_function builds a new object on every call
            function = self._functions[key] = self.module(family).get_function(kernel)
        function(tuple(grid), tuple(block), tuple(args), shared_mem=shared_mem)


def cache_dir() -> str:
    """CuPy's kernel cache directory (where compiled modules persist across processes)."""
    return os.environ.get("CUPY_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cupy",
                                                         "kernel_cache"))

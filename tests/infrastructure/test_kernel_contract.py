"""The Python<->CUDA contract, declared once (gpuops/kernels.py) and kept by the sources:

- every kernel is named ``<base>_<f16|f32|f64>`` (``kernels.kernel_name``, the only rule
  launch code uses);
- the numbers both sides depend on (``kernels.CONSTANTS``) reach every source as
  ``#define``s from the loader, no ``.cu``/``.cuh`` file defines one of them itself, and each
  is used by some source;
- the strided-parameter declarations next to the kernels name kernels and parameters that
  exist.
"""
from __future__ import annotations

import fnmatch
import re

import numpy
import pytest

import gpuops
from gpuops import kernels

FAMILIES = kernels.families()
SUFFIXES = ("f16", "f32", "f64")


@pytest.fixture(scope="module")
def emu():
    return pytest.importorskip("gpuops.emu", reason="gpuops.emu missing")


def _kernels_of(emu, family: str) -> dict:
    from gpuops.emu import build, signatures
    if build.compiler() is None:
        pytest.skip("no C++ compiler to preprocess the sources")
    return signatures.kernels(build.preprocess(kernels.source(family)))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_kernel_name_is_base_and_dtype(emu, family):
    names = sorted(_kernels_of(emu, family))
    assert names, f"{family}: no kernels found"
    irregular = [n for n in names
                 if not re.fullmatch(r"[a-z][a-z0-9_]*_(f16|bf16|f32|f64)", n)]
    assert not irregular, f"{family}: kernels not named <base>_<f16|bf16|f32|f64>: {irregular}"
    for name in names:
        base, _, suffix = name.rpartition("_")
        dtype = {"f16": numpy.float16, "bf16": gpuops.bfloat16, "f32": numpy.float32,
                 "f64": numpy.float64}[suffix]
        assert kernels.kernel_name(base, dtype) == name


def test_kernel_name():
    assert kernels.kernel_name("relu", numpy.float32) == "relu_f32"
    assert kernels.kernel_name("gemm_tc", "float16") == "gemm_tc_f16"
    assert kernels.kernel_name("relu", gpuops.bfloat16) == "relu_bf16"
    assert kernels.kernel_name("sum_rows", numpy.dtype(numpy.float64)) == "sum_rows_f64"


@pytest.mark.parametrize("family", FAMILIES)
def test_constants_are_defined_by_the_loader_only(family):
    text = kernels.source(family)
    lines = text.splitlines()
    for i, (name, value) in enumerate(kernels.CONSTANTS.items()):
        assert lines[i] == f"#define {name} {value}", f"{family}: line {i + 1} is {lines[i]!r}"
    body = "\n".join(lines[len(kernels.CONSTANTS):])
    for name in kernels.CONSTANTS:
        assert not re.search(rf"^\s*#\s*define\s+{name}\b", body, re.M), \
            f"{family}: the source defines {name} itself (it comes from kernels.CONSTANTS)"


def test_every_constant_is_used_by_a_source():
    sources = {family: "\n".join(kernels.source(family).splitlines()[len(kernels.CONSTANTS):])
               for family in FAMILIES}
    unused = [name for name in kernels.CONSTANTS
              if not any(re.search(rf"\b{name}\b", text) for text in sources.values())]
    assert not unused, f"CONSTANTS no .cu/.cuh file uses: {unused}"


@pytest.mark.parametrize("family", FAMILIES)
def test_strided_declarations_name_real_kernels_and_parameters(emu, family):
    declared = kernels.strided_params(kernels.source(family))
    found = _kernels_of(emu, family)
    for pattern, params in declared.items():
        matching = [k for k in found if fnmatch.fnmatchcase(k, pattern)]
        assert matching, f"{family}: '// gpuops-strided: {pattern}' matches no kernel"
        for kernel in matching:
            names = {p.name for p in found[kernel].params}
            missing = set(params) - names
            assert not missing, f"{family}.{kernel}: no parameter(s) {sorted(missing)}"


def test_strided_params_parses_declarations():
    text = "// gpuops-strided: gemm_*: A, B\n// gpuops-strided: *_bcast_*: a, b\nint x;\n"
    assert kernels.strided_params(text) == {"gemm_*": ("A", "B"), "*_bcast_*": ("a", "b")}

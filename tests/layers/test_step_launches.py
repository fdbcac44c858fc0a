"""What the host does for one MLP training step (benchmarks/step_launches.py): the kernel
launches, device fills and uploads of a step of ``python -m gpuops train``'s MLP at batch
512 under the recording launcher (nothing runs; counts are deterministic, no timing is
asserted). A change that adds a launch, a memset or a per-step upload to the step shows
here."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks import step_launches  # noqa: E402

# The MLP step 784-256(relu)-256(relu)-10, SGD with Nesterov momentum: 3 forward GEMMs
# (bias and relu in the epilogue), the fused softmax-cross-entropy forward + gradient and
# its scale by the upstream gradient (2), the backward GEMMs with relu' folded in and the
# bias gradients as row sums (5), one fused SGD launch over the six parameters.
MLP_LAUNCHES = 11


def test_mlp_step_launches_fills_and_uploads():
    result = step_launches.measure("mlp", steps=2, warmup=3, counted=4)
    assert result["launches"] == MLP_LAUNCHES, result["sequence"]
    by_kernel = result["by_kernel"]
    assert by_kernel["optim/sgd_step_f32"] == 1  # one fused launch for every parameter
    # the one device fill: the ones that seed backward (autograd)
    assert list(result["fills"].values()) == [1.0]
    assert "autograd.py" in next(iter(result["fills"]))


def test_optimizer_uploads_its_table_once_for_the_same_arrays():
    """Steps whose gradients keep their addresses upload no chunk table; the first step's
    upload is counted by the tool (its call sites go through gpuops' xp)."""
    from gpuops import backend, optim
    from gpuops.autograd import Tensor
    import numpy
    from benchmarks.launch_fakes import RecordingLauncher
    params = [Tensor(numpy.zeros((4, 3), numpy.float32), requires_grad=True),
              Tensor(numpy.zeros(4, numpy.float32), requires_grad=True)]
    for p in params:
        p.grad = numpy.ones_like(p.data)
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    calls = step_launches.ArrayCalls()
    with backend.use_cpu_launcher(RecordingLauncher()) as _, calls.counting():
        for _ in range(5):
            opt.step()
    assert sum(calls.uploads.values()) == 1 and sum(calls.fills.values()) == 0

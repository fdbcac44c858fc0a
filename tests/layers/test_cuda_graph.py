"""CUDA-graph training steps (gpuops.graph, ``train --cuda-graph``) modelled on the CPU: the
capture records the launches of a step on the emulator without running them, a replay
launches the list. N steps (one eager warm-up, then replays) must give the parameters of N
eager steps bit for bit; the conditions the model can check are refused with GraphError.
The CuPy capture itself (stream capture, held memory, host syncs refused by CUDA) needs a
GPU: those tests skip without one."""
from __future__ import annotations

import argparse

import numpy
import pytest

import gpuops
from gpuops import Tensor, graph, nn, train
from gpuops.optim import SGD, Adam
from backends import BACKENDS

EMU = [pytest.param(b, id=b.name, marks=b.marks) for b in BACKENDS if b.name == "emu"]
STEPS = 4
BATCH, FEATURES, CLASSES = 6, 8, 4


def _problem(seed=0, optimizer=SGD, dropout=False):
    """A tiny MLP, its optimizer, a step function and STEPS + 1 batches (the last partial)."""
    nn.manual_seed(seed)
    layers = [nn.Linear(FEATURES, 16, activation="relu")]
    if dropout:
        layers.append(nn.Dropout(0.25))
    model = nn.Sequential(*layers, nn.Linear(16, CLASSES))
    if optimizer is SGD:
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    else:
        opt = optimizer(model.parameters(), lr=0.01)
    criterion = nn.CrossEntropyLoss()

    def step(x, labels):
        logits = model(Tensor(x))
        loss = criterion(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.data, logits.data

    rng = numpy.random.default_rng(seed + 1)
    batches = [(rng.standard_normal((n, FEATURES)).astype(numpy.float32),
                rng.integers(0, CLASSES, n))
               for n in [BATCH] * STEPS + [BATCH - 2]]
    return model, opt, step, batches


def _parameters(model):
    return [p.data.copy() for p in model.parameters()]


@pytest.mark.parametrize("backend", EMU)
def test_replayed_steps_equal_eager_steps(backend):
    """One warm-up step, a capture, STEPS - 1 replays and an eager partial batch, through
    train._Steps: the losses, logits and parameters of every step equal the eager run's."""
    with backend.active():
        model, _, step, batches = _problem()
        eager = [tuple(a.copy() for a in step(x, y)) for x, y in batches]
        eager_params = _parameters(model)

        model, opt, step, batches = _problem()
        steps = train._Steps(step, opt)
        replayed = [tuple(a.copy() for a in steps(x, y)) for x, y in batches]
        graphed_params = _parameters(model)
    assert steps.graph is not None and steps.graph.launches > 0
    for (loss, logits), (loss_g, logits_g) in zip(eager, replayed):
        numpy.testing.assert_array_equal(loss_g, loss)
        numpy.testing.assert_array_equal(logits_g, logits)
    for p, q in zip(eager_params, graphed_params):
        numpy.testing.assert_array_equal(q, p)


@pytest.mark.parametrize("backend", EMU)
def test_capture_runs_nothing_and_replay_runs_the_captured_launches(backend):
    """The capture launches no kernel (CUDA's capture executes nothing either): parameters
    change only at the replay, which launches what was captured."""
    launched = []
    with backend.active():
        model, opt, step, batches = _problem()
        x, y = (a.copy() for a in batches[0])
        step(x, y)  # warm-up
        inner = gpuops.backend.cpu_backend().launcher
        original = inner.launch

        def counting(*args, **kwargs):
            launched.append(args[1])
            return original(*args, **kwargs)

        inner.launch = counting
        try:
            before = _parameters(model)
            g = graph.capture(step, (x, y))
            assert launched == []
            for p, q in zip(before, _parameters(model)):
                numpy.testing.assert_array_equal(q, p)
            g.replay()
        finally:
            del inner.launch
    assert len(launched) == g.launches and "sgd_step_f32" in launched
    assert any((q != p).any() for p, q in zip(before, _parameters(model)))


@pytest.mark.parametrize("backend", EMU)
@pytest.mark.parametrize("optimizer,dropout,match", [
    (Adam, False, r"changes from step to step"),   # bias correction 1 - beta^t
    (SGD, True, r"dropout.*changes from step to step"),  # a new seed per call
])
def test_steps_that_change_every_step_are_refused(backend, optimizer, dropout, match):
    with backend.active():
        _, _, step, batches = _problem(optimizer=optimizer, dropout=dropout)
        x, y = batches[0]
        step(x, y)
        with pytest.raises(graph.GraphError, match=match):
            graph.capture(step, (x, y))


@pytest.mark.parametrize("backend", EMU)
def test_a_learning_rate_changed_after_the_capture_is_refused(backend):
    with backend.active():
        _, opt, step, batches = _problem()
        steps = train._Steps(step, opt)
        steps(*batches[0])
        steps(*batches[1])
        opt.lr = 0.05  # what a scheduler would do between steps
        with pytest.raises(graph.GraphError, match="changed since the capture"):
            steps(*batches[2])


def test_the_numpy_code_cannot_be_captured():
    _, _, step, batches = _problem()
    with pytest.raises(graph.GraphError, match="needs kernels"):
        graph.capture(step, batches[0])


@pytest.mark.parametrize("options,message", [
    ([], "adam"),
    (["--optimizer", "sgd", "--model", "cnn"], "dropout seed"),
    (["--optimizer", "sgd", "--dtype", "bfloat16"], "float32 only"),
    (["--optimizer", "sgd", "--backend", "numpy"], "runs no kernels"),
])
def test_train_refuses_runs_it_cannot_capture(options, message):
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args(["--cuda-graph", *options])
    with pytest.raises(train.TrainError, match=message):
        train._config(args)


@pytest.mark.skipif(gpuops.gpu_available(), reason="the error of a machine without a GPU")
def test_train_cuda_graph_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    from gpuops.cli import main
    code = main(["train", "--cuda-graph", "--optimizer", "sgd", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err
    assert "--cuda-graph" in err and "CuPy" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not gpuops.gpu_available(), reason="needs CuPy and a usable CUDA GPU")
def test_cupy_graph_replays_equal_eager_steps():
    """On a GPU: the stream-captured step, replayed, gives the eager parameters."""
    cupy = pytest.importorskip("cupy")
    model, _, step, batches = _problem()
    model.to_gpu()
    eager = [step(cupy.asarray(x), cupy.asarray(y))[0].get() for x, y in batches[:STEPS]]
    eager_params = [cupy.asnumpy(p.data) for p in model.parameters()]
    model, opt, step, batches = _problem()
    model.to_gpu()
    steps = train._Steps(step, opt)
    replayed = [steps(cupy.asarray(x), cupy.asarray(y))[0].get() for x, y in batches[:STEPS]]
    numpy.testing.assert_array_equal(numpy.array(replayed), numpy.array(eager))
    for p, q in zip(eager_params, model.parameters()):
        numpy.testing.assert_array_equal(cupy.asnumpy(q.data), p)


def _fake_cupy_backend(monkeypatch):
    """gpu_backend() answering with a fake CuPy module (benchmarks/launch_fakes.py) and a
    launcher that records what reaches it."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.launch_fakes import RecordingLauncher, fake_cupy
    cp = fake_cupy()
    launcher = RecordingLauncher()
    monkeypatch.setattr(gpuops.backend, "_cupy_backend",
                        gpuops.backend.Backend("cupy", cp, launcher))
    return cp, launcher


def test_cupy_capture_sequence_on_a_fake_cupy(monkeypatch):
    """The CuPy path's order of operations (on a fake module: no GPU here): the step is
    captured twice on a side stream with the holding allocator, its launches reach the real
    launcher (the stream capture records them), a table uploaded during a capture is `set`
    after end_capture, and a replay launches the second graph."""
    cp, launcher = _fake_cupy_backend(monkeypatch)
    tables = []

    def step(x):
        gpuops.backend.gpu_backend().launcher.launch("optim", "sgd_step_f32", (2,), (256,),
                                                      (numpy.float32(0.1),))
        tables.append(graph.upload(cp, numpy.arange(3)))
        assert cp.allocator is not None  # allocations go through the holding allocator
        return "outputs"

    g = graph._capture_cupy(cp, step, (numpy.zeros(2),), None)
    assert cp.events == ["synchronize"] + ["stream.enter", "allocator.on", "begin_capture",
                                           "end_capture", "allocator.off", "stream.exit",
                                           "set"] * 2 + ["synchronize"]
    assert len(launcher.launches) == 2 and g.launches == 1
    assert [t.host.tolist() for t in tables] == [[0, 1, 2]] * 2
    assert g.replay() == "outputs" and cp.events[-1] == "graph.launch"
    assert gpuops.backend.gpu_backend().launcher is launcher  # restored after the capture


def test_cupy_capture_of_a_failing_step_ends_the_capture(monkeypatch):
    cp, _ = _fake_cupy_backend(monkeypatch)

    def step(x):
        raise RuntimeError("operation not permitted when stream is capturing")

    with pytest.raises(graph.GraphError, match="host sync"):
        graph._capture_cupy(cp, step, (numpy.zeros(2),), None)
    assert cp.events[-3:] == ["end_capture", "allocator.off", "stream.exit"]

"""Transformer layers (nn.Embedding, LayerNorm, RMSNorm, GELU, SiLU, MultiheadAttention,
nn.utils.clip_grad_norm_) and the GPT of gpuops.gpt: shapes, gradients by finite
differences in float64, state dicts, the tied embedding, sampling, and a differential
test against the same GPT written in PyTorch, trained side by side."""
from __future__ import annotations

import math

import numpy
import pytest

import gpuops
from gpuops import Tensor, gpt, nn
from gpuops.optim import AdamW

NEEDED = ("embedding", "layer_norm", "rms_norm", "gelu", "silu", "attention", "linear")
pytestmark = pytest.mark.skipif(any(op not in gpuops.OPERATORS for op in NEEDED),
                                reason=f"the transformer layers need {', '.join(NEEDED)}")

F64 = numpy.float64


def _leaves(module: nn.Module, inputs: list) -> list:
    return [t for t in [*module.parameters(), *inputs] if t.requires_grad]


def _check_gradients(f, tensors: list, seed: int = 0, eps: float = 1e-6, rtol: float = 1e-6):
    """``f()`` → a Tensor; the gradient of Σ f()·r (r random) wrt each tensor against central
    differences along a random direction (float64)."""
    rng = numpy.random.default_rng(seed)
    y = f()
    r = rng.standard_normal(y.shape)
    for t in tensors:
        t.grad = None
    (y * Tensor(r)).sum().backward()
    for i, t in enumerate(tensors):
        assert t.grad is not None, f"tensor {i} got no gradient"
        d = rng.standard_normal(t.shape)
        original = t.data.copy()
        t.data[...] = original + eps * d
        plus = float((f().data * r).sum())
        t.data[...] = original - eps * d
        minus = float((f().data * r).sum())
        t.data[...] = original
        numeric = (plus - minus) / (2 * eps)
        analytic = float((t.grad * d).sum())
        assert analytic == pytest.approx(numeric, rel=rtol, abs=1e-8), (i, t.shape)


def _x(*shape, seed=1, requires_grad=True):
    data = numpy.random.default_rng(seed).standard_normal(shape)
    return Tensor(data, requires_grad=requires_grad)


# ---- layers: shapes and gradients ------------------------------------------------------------

@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm(affine):
    nn.manual_seed(0)
    layer = nn.LayerNorm((6,), eps=1e-5, elementwise_affine=affine, dtype=F64)
    if affine:  # not the identity affine map, so the gradients wrt weight and bias are tested
        layer.weight.data[...] = numpy.linspace(0.5, 1.5, 6)
        layer.bias.data[...] = numpy.linspace(-1, 1, 6)
    x = _x(2, 3, 6)
    y = layer(x)
    assert y.shape == (2, 3, 6)
    xd = x.data
    expected = (xd - xd.mean(-1, keepdims=True)) / numpy.sqrt(xd.var(-1, keepdims=True) + 1e-5)
    if affine:
        expected = expected * layer.weight.data + layer.bias.data
    numpy.testing.assert_allclose(y.data, expected, rtol=1e-10, atol=1e-12)
    assert len(layer.parameters()) == (2 if affine else 0)
    _check_gradients(lambda: layer(x), _leaves(layer, [x]))


def test_rms_norm():
    layer = nn.RMSNorm(5, dtype=F64)
    layer.weight.data[...] = numpy.linspace(0.5, 1.5, 5)
    x = _x(4, 5)
    expected = x.data / numpy.sqrt((x.data ** 2).mean(-1, keepdims=True) + 1e-6) * layer.weight.data
    numpy.testing.assert_allclose(layer(x).data, expected, rtol=1e-10)
    _check_gradients(lambda: layer(x), _leaves(layer, [x]))


@pytest.mark.parametrize("layer,reference", [
    (nn.GELU(), lambda x: 0.5 * x * (1 + numpy.vectorize(math.erf)(x / math.sqrt(2)))),
    (nn.GELU("tanh"), lambda x: 0.5 * x * (1 + numpy.tanh(math.sqrt(2 / math.pi)
                                                           * (x + 0.044715 * x ** 3)))),
    (nn.SiLU(), lambda x: x / (1 + numpy.exp(-x))),
], ids=["gelu", "gelu-tanh", "silu"])
def test_activations(layer, reference):
    x = _x(3, 7)
    numpy.testing.assert_allclose(layer(x).data, reference(x.data), rtol=1e-10, atol=1e-12)
    _check_gradients(lambda: layer(x), [x])


def test_embedding():
    nn.manual_seed(0)
    layer = nn.Embedding(10, 4, dtype=F64)
    ids = numpy.array([[1, 3, 1], [9, 0, 1]])
    y = layer(ids)
    assert y.shape == (2, 3, 4)
    numpy.testing.assert_array_equal(y.data, layer.weight.data[ids])
    assert abs(layer.weight.data.std() - 1) < 0.5  # N(0, 1) as torch
    _check_gradients(lambda: layer(ids), [layer.weight])
    layer.weight.grad = None
    layer(ids).sum().backward()
    counts = numpy.bincount(ids.ravel(), minlength=10)[:, None] * numpy.ones(4)
    numpy.testing.assert_array_equal(layer.weight.grad, counts)  # repeated ids summed


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_self_attention(causal, batch_first):
    nn.manual_seed(0)
    layer = nn.MultiheadAttention(8, 2, batch_first=batch_first, causal=causal, dtype=F64)
    for p in layer.parameters():  # nonzero biases too
        p.data[...] = numpy.random.default_rng(p.size).standard_normal(p.shape) * 0.5
    x = _x(*((2, 5, 8) if batch_first else (5, 2, 8)))
    y, weights = layer(x)
    assert y.shape == x.shape and weights is None
    _check_gradients(lambda: layer(x)[0], _leaves(layer, [x]))
    # causal: position t sees positions <= t only
    x2 = Tensor(x.data.copy())
    last = (slice(None), -1) if batch_first else (-1, slice(None))
    x2.data[last] += 1.0
    changed = numpy.abs(layer(x2)[0].data - y.data).max(axis=-1)
    first_positions = changed[:, :-1] if batch_first else changed[:-1]
    assert (first_positions == 0).all() == causal


def test_multihead_cross_attention():
    nn.manual_seed(0)
    layer = nn.MultiheadAttention(6, 3, dtype=F64)
    q, k, v = _x(2, 4, 6, seed=1), _x(2, 7, 6, seed=2), _x(2, 7, 6, seed=3)
    y, _ = layer(q, k, v)
    assert y.shape == (2, 4, 6)
    _check_gradients(lambda: layer(q, k, v)[0], _leaves(layer, [q, k, v]))


def test_block_and_gpt_gradients():
    nn.manual_seed(0)
    block = gpt.Block(8, 2, dtype=F64)
    x = _x(2, 5, 8)
    assert block(x).shape == (2, 5, 8)
    _check_gradients(lambda: block(x), _leaves(block, [x]))
    model = gpt.GPT(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8, dtype=F64)
    ids = numpy.random.default_rng(0).integers(0, 11, (2, 6))
    assert model(ids).shape == (2, 6, 11)
    _check_gradients(lambda: model.loss(ids[:, :-1], ids[:, 1:]), model.parameters())


@pytest.mark.parametrize("make,message", [
    (lambda: nn.LayerNorm((3, 4)), "LayerNorm: normalized_shape must be an int or a 1-tuple"),
    (lambda: nn.LayerNorm(0), "LayerNorm: normalized_shape"),
    (lambda: nn.LayerNorm(4, eps=0.0), "LayerNorm: eps"),
    (lambda: nn.RMSNorm(4, elementwise_affine=1), "RMSNorm: elementwise_affine must be a bool"),
    (lambda: nn.GELU("fast"), "GELU: approximate must be 'none' or 'tanh'"),
    (lambda: nn.Embedding(0, 3), "Embedding: num_embeddings"),
    (lambda: nn.Embedding(3, 2.5), "Embedding: embedding_dim"),
    (lambda: nn.MultiheadAttention(6, 4), "MultiheadAttention: embed_dim (6) must be divisible"),
    (lambda: nn.MultiheadAttention(8, 2, dropout=0.1), "MultiheadAttention: dropout=0.1"),
    (lambda: nn.MultiheadAttention(8, 2, causal="yes"), "MultiheadAttention: causal must be"),
    (lambda: gpt.GPT(n_embd=10, n_head=4), "GPT: n_embd (10) must be divisible by n_head (4)"),
    (lambda: gpt.GPT(block_size=0), "GPT: block_size"),
])
def test_constructor_errors_name_the_layer(make, message):
    with pytest.raises((TypeError, ValueError), match=message.replace("(", r"\(").replace(
            ")", r"\)")):
        make()


def test_forward_errors():
    with pytest.raises(ValueError, match=r"LayerNorm: input of shape \(2, 5\) does not end"):
        nn.LayerNorm(4)(_x(2, 5))
    with pytest.raises(ValueError, match="MultiheadAttention: key must be 3-d"):
        nn.MultiheadAttention(4, 2, dtype=F64)(_x(2, 3, 4), _x(2, 3, 5))
    model = gpt.GPT(block_size=8, n_layer=1, n_embd=8, n_head=2)
    with pytest.raises(ValueError, match=r"GPT: sequence length 9 is outside \[1, block_size=8\]"):
        model(numpy.zeros((1, 9), numpy.int64))


def test_clip_grad_norm_():
    a, b = Tensor(numpy.zeros(3), requires_grad=True), Tensor(numpy.zeros(2), requires_grad=True)
    c = Tensor(numpy.zeros(2), requires_grad=True)  # no gradient: skipped
    a.grad, b.grad = numpy.array([3.0, 0.0, 0.0]), numpy.array([0.0, 4.0])
    norm = nn.utils.clip_grad_norm_([a, b, c], 1.0)
    assert float(norm) == pytest.approx(5.0)
    numpy.testing.assert_allclose(a.grad, [3 / (5 + 1e-6), 0, 0])
    numpy.testing.assert_allclose(b.grad, [0, 4 / (5 + 1e-6)])
    assert float(nn.utils.clip_grad_norm_(a, 10.0)) == pytest.approx(0.6, rel=1e-5)
    numpy.testing.assert_allclose(a.grad, [3 / (5 + 1e-6), 0, 0])  # below max_norm: unchanged


# ---- the GPT ------------------------------------------------------------------------------

def _tiny(seed=0, dtype=numpy.float32, **kw):
    nn.manual_seed(seed)
    sizes = dict(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=8)
    sizes.update(kw)
    return gpt.GPT(**sizes, dtype=dtype)


def test_gpt_initialisation():
    model = _tiny(n_embd=64, n_layer=4)
    std = {name: float(p.data.std()) for name, p in model.named_parameters()}
    assert std["wte.weight"] == pytest.approx(0.02, rel=0.1)
    assert std["h.0.mlp.c_fc.weight"] == pytest.approx(0.02, rel=0.1)
    assert std["h.0.attn.in_proj_weight"] == pytest.approx(0.02, rel=0.1)
    assert std["h.3.mlp.c_proj.weight"] == pytest.approx(0.02 / math.sqrt(8), rel=0.1)
    assert std["h.3.attn.out_proj.weight"] == pytest.approx(0.02 / math.sqrt(8), rel=0.15)
    assert std["h.1.attn.in_proj_bias"] == 0 and std["h.1.mlp.c_fc.bias"] == 0
    assert (model.ln_f.weight.data == 1).all() and (model.h[0].ln_1.bias.data == 0).all()


def test_gpt_state_dict_round_trip(tmp_path):
    model, other = _tiny(seed=0), _tiny(seed=1)
    ids = numpy.random.default_rng(0).integers(0, 13, (3, 8))
    assert not numpy.array_equal(model(ids).data, other(ids).data)
    state = model.state_dict()
    assert "wte.weight" in state and not any("lm_head" in k for k in state)
    other.load_state_dict(state)
    numpy.testing.assert_array_equal(model(ids).data, other(ids).data)
    gpuops.save(model.state_dict(), tmp_path / "gpt.safetensors")
    third = _tiny(seed=2)
    third.load_state_dict(gpuops.load(tmp_path / "gpt.safetensors"))
    numpy.testing.assert_array_equal(model(ids).data, third(ids).data)


def test_tied_embedding_is_one_parameter_with_both_gradients():
    model = _tiny(dtype=F64)
    names = [name for name, _ in model.named_parameters()]
    assert sum(p is model.wte.weight for p in model.parameters()) == 1
    assert names.count("wte.weight") == 1
    n_params = sum(p.size for p in model.parameters())
    C, V, L = 8, 13, 2
    norms, attention = 2 * 2 * C, (3 * C * C + 3 * C) + (C * C + C)
    per_block = norms + attention + (4 * C * C + 4 * C) + (4 * C * C + C)
    assert n_params == V * C + 8 * C + L * per_block + 2 * C  # one V x C table
    ids = numpy.array([[1, 2, 3, 1, 2, 3]])  # rows 1-3 are looked up, all rows are output
    model.loss(ids[:, :-1], ids[:, 1:]).backward()
    tied = model.wte.weight.grad.copy()
    # The same forward with the output weight a separate copy: lookup + output gradients
    model.zero_grad()
    output = Tensor(model.wte.weight.data.copy(), requires_grad=True)
    x = model.wte(ids[:, :-1]) + model.wpe(numpy.arange(5))
    for block in model.h:
        x = block(x)
    logits = model.ln_f(x).linear(output)
    logits.reshape(5, V).cross_entropy(ids[0, 1:]).backward()
    lookup = model.wte.weight.grad
    numpy.testing.assert_allclose(tied, lookup + output.grad, rtol=1e-12, atol=1e-15)
    assert (lookup[4:] == 0).all() and (output.grad[4:] != 0).all()
    assert (lookup[1:4] != 0).all()


def test_generate_is_seeded_and_deterministic():
    model = _tiny()
    prompt = numpy.array([[1, 2, 3], [4, 5, 6]])
    a = model.generate(prompt, 12, temperature=0.8, seed=3)  # 15 > block_size 8: cropped context
    assert a.shape == (2, 15) and a.dtype == numpy.int64
    numpy.testing.assert_array_equal(a[:, :3], prompt)
    assert ((0 <= a) & (a < 13)).all()
    numpy.testing.assert_array_equal(a, model.generate(prompt, 12, temperature=0.8, seed=3))
    assert not numpy.array_equal(a, model.generate(prompt, 12, temperature=0.8, seed=4))
    assert model.training  # restored
    # a very low temperature picks the most likely byte
    greedy = model.generate(prompt[:1], 1, temperature=1e-6, seed=0)
    assert greedy[0, -1] == int(model(prompt[:1]).data[0, -1].argmax())
    with pytest.raises(ValueError, match="GPT.generate: temperature"):
        model.generate(prompt, 1, temperature=0.0)


# ---- the same GPT in PyTorch, trained side by side ----------------------------------------------

def _torch_gpt_loss(torch, w: dict, ids, targets, n_layer: int, n_head: int):
    """GPT-2 in plain torch.nn.functional ops on the parameters ``w`` (gpuops' names)."""
    F = torch.nn.functional
    B, T = ids.shape
    x = F.embedding(ids, w["wte.weight"]) + w["wpe.weight"][:T]
    C = x.shape[-1]
    for i in range(n_layer):
        p = f"h.{i}."
        h = F.layer_norm(x, (C,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], 1e-5)
        qkv = F.linear(h, w[p + "attn.in_proj_weight"], w[p + "attn.in_proj_bias"])
        q, k, v = (t.reshape(B, T, n_head, C // n_head).transpose(1, 2)
                   for t in qkv.split(C, dim=-1))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + F.linear(a.transpose(1, 2).reshape(B, T, C), w[p + "attn.out_proj.weight"],
                         w[p + "attn.out_proj.bias"])
        h = F.layer_norm(x, (C,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], 1e-5)
        h = F.gelu(F.linear(h, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"]),
                   approximate="tanh")
        x = x + F.linear(h, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"])
    x = F.layer_norm(x, (C,), w["ln_f.weight"], w["ln_f.bias"], 1e-5)
    logits = x @ w["wte.weight"].T
    return F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T))


@pytest.mark.parametrize("dtype,rtol", [(numpy.float64, 1e-4), (numpy.float32, 1e-2)],
                         ids=["float64", "float32"])
def test_matches_pytorch_over_20_adamw_steps(dtype, rtol):
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny products: more threads only spin on a busy CI box
    try:
        _train_side_by_side(torch, dtype, rtol)
    finally:
        torch.set_num_threads(threads)


def _train_side_by_side(torch, dtype, rtol):
    n_layer, n_head, block, vocab = 2, 2, 16, 32
    model = _tiny(seed=5, dtype=dtype, vocab_size=vocab, block_size=block, n_layer=n_layer,
                  n_head=n_head, n_embd=16)
    named = dict(model.named_parameters())
    w = {k: torch.tensor(p.data.copy(), requires_grad=True) for k, p in named.items()}

    def groups(params: dict) -> list:
        return [{"params": [p for p in params.values() if p.ndim >= 2], "weight_decay": 0.1},
                {"params": [p for p in params.values() if p.ndim < 2], "weight_decay": 0.0}]

    ours = AdamW(groups(named), lr=3e-3, betas=(0.9, 0.95))
    theirs = torch.optim.AdamW(groups(w), lr=3e-3, betas=(0.9, 0.95))
    text = numpy.random.default_rng(0).integers(0, vocab, 4000)
    rng = numpy.random.default_rng(1)
    losses = []
    for _ in range(20):
        starts = rng.integers(0, len(text) - block - 1, 4)
        index = starts[:, None] + numpy.arange(block)
        x, y = text[index], text[index + 1]
        loss = model.loss(x, y)
        ours.zero_grad()
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        ours.step()
        ref = _torch_gpt_loss(torch, w, torch.tensor(x), torch.tensor(y), n_layer, n_head)
        theirs.zero_grad()
        ref.backward()
        ref_norm = torch.nn.utils.clip_grad_norm_(list(w.values()), 1.0)
        theirs.step()
        losses.append((loss.item(), ref.item()))
        assert float(norm) == pytest.approx(ref_norm.item(), rel=rtol)
    ours_losses, ref_losses = numpy.array(losses).T
    numpy.testing.assert_allclose(ours_losses, ref_losses, rtol=rtol)
    assert ref_losses[-1] < ref_losses[0]  # it learned something: the comparison means something
    for k, p in named.items():
        numpy.testing.assert_allclose(p.data, w[k].detach().numpy(), rtol=rtol * 10,
                                      atol=rtol * 1e-2)


def test_multihead_attention_matches_torch_state_dict():
    torch = pytest.importorskip("torch")
    nn.manual_seed(0)
    ours = nn.MultiheadAttention(8, 2, dtype=F64)
    theirs = torch.nn.MultiheadAttention(8, 2, batch_first=True, dtype=torch.float64)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    for p in ours.parameters():
        p.data[...] = numpy.random.default_rng(p.size).standard_normal(p.shape) * 0.3
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    x, k = _x(2, 5, 8), _x(2, 6, 8, seed=2)
    mask = torch.ones(5, 5, dtype=torch.bool).triu(1)  # True: not allowed to attend
    expected, _ = theirs(torch.tensor(x.data), torch.tensor(x.data), torch.tensor(x.data),
                         attn_mask=mask, is_causal=True, need_weights=False)
    numpy.testing.assert_allclose(ours(x, is_causal=True)[0].data, expected.detach().numpy(),
                                  rtol=1e-10, atol=1e-12)
    expected, _ = theirs(torch.tensor(x.data), torch.tensor(k.data), torch.tensor(k.data),
                         need_weights=False)
    numpy.testing.assert_allclose(ours(x, k, k)[0].data, expected.detach().numpy(),
                                  rtol=1e-10, atol=1e-12)


def test_gpt_dropout_only_in_training():
    model = _tiny(dropout=0.2)
    ids = numpy.random.default_rng(0).integers(0, 13, (2, 8))
    first, second = model(ids).data, model(ids).data
    assert not numpy.array_equal(first, second)  # a fresh mask per call
    model.eval()
    numpy.testing.assert_array_equal(model(ids).data, model(ids).data)
    state = model.state_dict()
    assert state["h.0.drop.calls"] == 4 and state["drop.calls"] == 2  # masks continue on resume

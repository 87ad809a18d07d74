"""llm_lib.model against references: transformers' GPT-2, torch.nn.RMSNorm, FlopCounterMode, and
an independent complex-number RoPE."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from llm_lib.attention import KVCache
from llm_lib.model import (GPT, GPTConfig, RMSNorm, RotaryEmbedding, SwiGLU, count_parameters,
                           flops_per_token)

TINY = GPTConfig(vocab_size=97, context_length=16, n_layer=2, n_head=4, d_model=32)
LLAMA = dataclasses.replace(TINY, norm="rmsnorm", pos="rope", mlp="swiglu", bias=False, tie_weights=False)
VARIANTS = {"gpt2": TINY, "llama": LLAMA,
            "gpt2-explicit": dataclasses.replace(TINY, fused_attention=False),
            "rope-only": dataclasses.replace(TINY, pos="rope"),
            "rmsnorm-bias": dataclasses.replace(TINY, norm="rmsnorm")}


def ids(config, B=2, T=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.vocab_size, (B, T or config.context_length), generator=g)


# --- GPT-2 weights from transformers ---------------------------------------------------------------

def tiny_hf_gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    # initializer_range 0.2 (GPT-2 uses 0.02) makes activations large enough that a wrong GELU
    # (erf instead of tanh) or eps shows up well above the 1e-5 tolerance.
    config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=101, n_positions=24,
                                     initializer_range=0.2, bos_token_id=0, eos_token_id=0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # HF initialises LayerNorms to 1/0 and biases to 0: randomise so they are tested
        for name, p in hf.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "ln" in name and name.endswith("weight") else 0.0))
    return hf


def test_from_huggingface_logits_match_gpt2():
    hf = tiny_hf_gpt2()
    model = GPT.from_huggingface(hf).eval()
    idx = ids(model.config, B=3, T=24)
    with torch.no_grad():
        expected = hf(idx).logits
        torch.testing.assert_close(model(idx), expected, atol=1e-5, rtol=0)
        # the bare state_dict + config path too (no "transformer." prefix issue, tied head)
        model2 = GPT.from_huggingface(hf.state_dict(), config=hf.config).eval()
        torch.testing.assert_close(model2(idx), expected, atol=1e-5, rtol=0)
    assert model.lm_head.weight is model.tok_emb.weight
    assert model.num_params() == sum(p.numel() for p in hf.parameters())


def test_from_huggingface_errors():
    hf = tiny_hf_gpt2()
    with pytest.raises(ValueError, match="config="):
        GPT.from_huggingface(hf.state_dict())
    sd = {k: v for k, v in hf.state_dict().items() if "ln_f" not in k}
    with pytest.raises(ValueError, match="missing"):
        GPT.from_huggingface(sd, config=hf.config)


# --- the modern pieces ----------------------------------------------------------------------------

def cis(angles):
    return torch.polar(torch.ones_like(angles), angles)  # e^{j·angle}


def rope_complex(x, start_pos, theta=10000.0):
    """Independent RoPE: pair feature i with i + d/2 as the complex number x_i + j·x_{i+d/2} and
    multiply by e^{j·m·θ_i}, θ_i = theta^(-2i/d)."""
    d = x.shape[-1]
    m = torch.arange(start_pos, start_pos + x.shape[-2], dtype=torch.float64)
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    z = torch.complex(x[..., : d // 2], x[..., d // 2:]) * cis(torch.outer(m, freqs))
    return torch.cat([z.real, z.imag], dim=-1)


def rope_interleaved(x, start_pos, theta=10000.0):
    """Meta's / RoFormer's layout: pairs (2i, 2i+1), as in Llama's reference code (view_as_complex)."""
    d = x.shape[-1]
    m = torch.arange(start_pos, start_pos + x.shape[-2], dtype=torch.float64)
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    z = torch.view_as_complex(x.reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(z * cis(torch.outer(m, freqs))).flatten(-2)


def test_rope_matches_complex_rotation():
    rope = RotaryEmbedding(8, 20).double()
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64)
    for start in (0, 5, 14):
        torch.testing.assert_close(rope(x, start), rope_complex(x, start), atol=1e-6, rtol=0)


def test_rope_layouts_differ_only_by_a_feature_permutation():
    rope = RotaryEmbedding(8, 20).double()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    perm = torch.tensor([0, 4, 1, 5, 2, 6, 3, 7])  # rotate-half pair (i, i+4) -> interleaved pair (2i, 2i+1)
    torch.testing.assert_close(rope_interleaved(x[..., perm], 3), rope(x, 3)[..., perm], atol=1e-6, rtol=0)


def test_rope_scores_depend_only_on_distance():
    rope = RotaryEmbedding(16, 64).double()
    q, k = torch.randn(1, 16, dtype=torch.float64), torch.randn(1, 16, dtype=torch.float64)
    scores = [(rope(q, m) * rope(k, m - 3)).sum() for m in (3, 10, 40, 63)]
    torch.testing.assert_close(torch.stack(scores), scores[0].expand(4), atol=1e-5, rtol=0)


def test_rmsnorm_matches_torch():
    ours = RMSNorm(32, eps=1e-5)
    ref = torch.nn.RMSNorm(32, eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_()
        ref.weight.copy_(ours.weight)
    x = torch.randn(4, 7, 32) * 3 + 1
    torch.testing.assert_close(ours(x), ref(x))


def test_swiglu_shape_and_formula():
    mlp = SwiGLU(LLAMA)
    assert LLAMA.hidden_dim == 88  # 8/3 · 32 = 85.3, rounded up to a multiple of 8
    assert mlp.gate.weight.shape == mlp.up.weight.shape == (88, 32) and mlp.proj.weight.shape == (32, 88)
    x = torch.randn(2, 5, 32)
    y = mlp(x)
    assert y.shape == x.shape
    manual = (F.silu(x @ mlp.gate.weight.T) * (x @ mlp.up.weight.T)) @ mlp.proj.weight.T
    torch.testing.assert_close(y, manual)
    assert all(m.bias is None for m in (mlp.gate, mlp.up, mlp.proj))


def test_llama_style_has_no_biases_and_untied_head():
    model = GPT(LLAMA)
    assert not [n for n, _ in model.named_parameters() if n.endswith("bias")]
    assert model.pos_emb is None and model.lm_head.weight is not model.tok_emb.weight
    assert not model.state_dict().keys() & {"rope.cos", "rope.sin"}  # derived tables, not checkpointed


# --- forward, loss, cache ------------------------------------------------------------------------

@pytest.mark.parametrize("name", VARIANTS)
def test_forward_shapes_and_loss(name):
    torch.manual_seed(0)
    model = GPT(VARIANTS[name])
    idx, targets = ids(model.config), ids(model.config, seed=1)
    logits = model(idx)
    assert logits.shape == (2, 16, 97)
    logits2, loss = model(idx, targets)
    torch.testing.assert_close(logits2, logits)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 97), targets.reshape(-1)))
    assert abs(loss.item() - math.log(97)) < 0.2  # small init: close to uniform over the vocabulary
    targets[:, :8] = -100  # ignored positions
    _, masked = model(idx, targets)
    torch.testing.assert_close(masked, F.cross_entropy(logits[:, 8:].reshape(-1, 97), targets[:, 8:].reshape(-1)))


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_fused_and_explicit_attention_give_same_logits(name):
    torch.manual_seed(0)
    fused = GPT(VARIANTS[name]).double()
    explicit = GPT(dataclasses.replace(VARIANTS[name], fused_attention=False)).double()
    explicit.load_state_dict(fused.state_dict())
    idx = ids(fused.config)
    torch.testing.assert_close(fused(idx), explicit(idx), atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", ["gpt2", "llama", "gpt2-explicit"])
def test_cached_incremental_forward_equals_full_forward(name):
    torch.manual_seed(0)
    model = GPT(VARIANTS[name]).double().eval()
    idx = ids(model.config, T=12)
    full = model(idx)
    cache = [KVCache() for _ in model.blocks]
    steps = [model(idx[:, :5], kv_cache=cache)] + [model(idx[:, t:t + 1], kv_cache=cache) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match=r"length 17 \(12 cached \+ 5 new\).*context_length=16"):
        model(idx[:, :5], kv_cache=cache)


def test_bad_inputs_raise_clear_errors():
    model = GPT(TINY)
    with pytest.raises(ValueError, match="length 17.*context_length=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(TypeError, match="token ids"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, vocab_size=97\)"):
        model(torch.tensor([[1, 97]]))
    with pytest.raises(ValueError, match="targets"):
        model(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="one KVCache per layer"):
        model(torch.zeros(1, 4, dtype=torch.long), kv_cache=[KVCache()])
    with pytest.raises(ValueError, match="norm"):
        GPTConfig(norm="batchnorm")
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(d_model=30, n_head=4)
    with pytest.raises(ValueError, match="n_layer must be a positive int"):
        GPTConfig(n_layer=0)
    with pytest.raises(ValueError, match="even"):
        GPTConfig(d_model=12, n_head=4, pos="rope")


# --- init, parameters, FLOPs ---------------------------------------------------------------------

def test_gpt2_init():
    config = dataclasses.replace(TINY, n_layer=8, d_model=64)
    model = GPT(config)
    assert model.lm_head.weight is model.tok_emb.weight
    std = lambda t: t.detach().std().item()
    assert abs(std(model.blocks[0].attn.qkv.weight) - 0.02) < 0.002
    for block in model.blocks:  # residual projections: 0.02 / √(2·8) = 0.005
        assert abs(std(block.attn.proj.weight) - 0.005) < 0.001 and abs(std(block.mlp.proj.weight) - 0.005) < 0.001
        assert torch.all(block.attn.qkv.bias == 0) and torch.all(block.norm1.weight == 1)


@pytest.mark.parametrize("name", VARIANTS)
def test_count_parameters_formula_matches_model(name):
    model = GPT(VARIANTS[name])
    n = sum(p.numel() for p in model.parameters())
    assert count_parameters(VARIANTS[name]) == count_parameters(model) == model.num_params() == n


def test_count_parameters_gpt2_small():
    assert count_parameters(GPTConfig()) == 124_439_808  # what transformers reports for "gpt2"


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_flops_per_token_matches_flop_counter(name):
    # The explicit attention path: FlopCounterMode sees its matmuls (it does not count torch's fused
    # CPU attention kernel at all).
    config = dataclasses.replace(VARIANTS[name], fused_attention=False)
    model = GPT(config)
    idx = ids(config, B=3)
    with FlopCounterMode(display=False) as forward:
        model(idx)
    assert forward.get_total_flops() == 3 * 16 * flops_per_token(config)
    with FlopCounterMode(display=False) as training:
        model(idx, idx)[1].backward()
    assert training.get_total_flops() == 3 * 16 * flops_per_token(config, training=True)
    with FlopCounterMode(display=False) as shorter:
        model(idx[:, :8])
    assert shorter.get_total_flops() == 3 * 8 * flops_per_token(config, seq_len=8)


def test_from_huggingface_explains_what_it_takes():
    from llm_lib.model import GPT

    with pytest.raises(TypeError, match="GPT2LMHeadModel or its state_dict"):
        GPT.from_huggingface("gpt2")


def test_forward_refuses_float_targets():
    from llm_lib.model import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=16, context_length=8, n_layer=1, n_head=2, d_model=8))
    idx = torch.randint(0, 16, (2, 4))
    with pytest.raises(TypeError, match="targets must be integer token ids"):
        model(idx, idx.float())

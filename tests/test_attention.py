"""llm_lib.attention against PyTorch: F.scaled_dot_product_attention and nn.MultiheadAttention."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from llm_lib.attention import KVCache, MultiHeadAttention, causal_mask, scaled_dot_product_attention

f64 = dict(dtype=torch.float64)


def qkv(*lead, T_q=5, T_k=7, d_k=8, d_v=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*lead, T_q, d_k, generator=g, **f64), torch.randn(*lead, T_k, d_k, generator=g, **f64),
            torch.randn(*lead, T_k, d_v, generator=g, **f64))


def assert_matches_torch(q, k, v, mask=None):
    """Outputs and gradients equal to F.scaled_dot_product_attention, in float64."""
    ours = [t.clone().requires_grad_() for t in (q, k, v)]
    theirs = [t.clone().requires_grad_() for t in (q, k, v)]
    out = scaled_dot_product_attention(*ours, mask)
    ref = F.scaled_dot_product_attention(*theirs, attn_mask=mask)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    g = torch.randn_like(out)
    out.backward(g)
    ref.backward(g)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=0)


def test_no_mask_batched_several_heads():
    assert_matches_torch(*qkv(2, 3))


def test_different_value_width_and_no_head_dim():
    assert_matches_torch(*qkv(4, d_v=5))
    assert_matches_torch(*qkv(T_q=3, T_k=3))  # plain (T, d_k) matrices


@pytest.mark.parametrize("mask_shape", [(5, 7), (2, 1, 5, 7), (1, 3, 5, 7), (2, 3, 5, 7), (2, 3, 1, 7)])
def test_boolean_mask_broadcasts_like_torch(mask_shape):
    q, k, v = qkv(2, 3)
    mask = torch.rand(mask_shape, generator=torch.Generator().manual_seed(1)) > 0.4
    mask[..., 0] = True  # every row keeps a key; empty rows have their own test
    assert_matches_torch(q, k, v, mask)


@pytest.mark.parametrize("mask_shape", [(5, 7), (2, 3, 5, 7)])
def test_float_mask_is_added_to_scores(mask_shape):
    q, k, v = qkv(2, 3)
    mask = torch.randn(mask_shape, **f64)
    mask[..., 1::2] = float("-inf")
    assert_matches_torch(q, k, v, mask)


def test_causal_matches_is_causal():
    q, k, v = qkv(2, 4, T_q=6, T_k=6)
    out = scaled_dot_product_attention(q, k, v, causal_mask(6))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6, rtol=0)
    assert_matches_torch(q, k, v, causal_mask(6))


def test_causal_mask_values_and_past():
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    m = causal_mask(2, past_length=3)  # two new queries at positions 3 and 4 after 3 cached keys
    assert m.shape == (2, 5)
    assert m.tolist() == [[True] * 4 + [False], [True] * 5]
    assert m.dtype == torch.bool


def test_fully_masked_rows_give_zeros_like_torch():
    q, k, v = qkv(2, 3)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[2] = False  # query 2 may attend to nothing
    out = scaled_dot_product_attention(q, k, v, mask)
    assert torch.all(out[..., 2, :] == 0)
    assert_matches_torch(q, k, v, mask)  # also: gradients finite and equal to torch's (zero for that row)
    float_mask = torch.zeros(5, 7, **f64).masked_fill(~mask, float("-inf"))
    assert_matches_torch(q, k, v, float_mask)
    q_ = q.clone().requires_grad_()
    scaled_dot_product_attention(q_, k, v, mask).sum().backward()
    assert torch.isfinite(q_.grad).all() and torch.all(q_.grad[..., 2, :] == 0)


def test_float32_close_to_torch():
    q, k, v = (t.float() for t in qkv(2, 3))
    mask = causal_mask(5, past_length=2)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, mask),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5, rtol=1e-5)


def test_bad_inputs_raise_clear_errors():
    q, k, v = qkv(2, 3)
    with pytest.raises(TypeError, match="floating-point"):
        scaled_dot_product_attention(q.long(), k, v)
    with pytest.raises(TypeError, match="share one dtype"):
        scaled_dot_product_attention(q.float(), k, v)
    with pytest.raises(ValueError, match=r"expected \(\.\.\., T_k, 8\)"):
        scaled_dot_product_attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 7, d_v\)"):
        scaled_dot_product_attention(q, k, v[..., :6, :])
    with pytest.raises(ValueError, match="leading"):
        scaled_dot_product_attention(q, k[:1], v[:1])
    with pytest.raises(ValueError, match=r"shape \(7, 5\) does not broadcast.*expected e\.g\. \(5, 7\)"):
        scaled_dot_product_attention(q, k, v, torch.ones(7, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean"):
        scaled_dot_product_attention(q, k, v, torch.ones(5, 7, dtype=torch.int64))
    with pytest.raises(TypeError, match="float mask"):
        scaled_dot_product_attention(q, k, v, torch.zeros(5, 7, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"\(B, T, d_model=16\)"):
        MultiHeadAttention(16, 4)(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 4)


@pytest.mark.parametrize("bias", [True, False])
def test_fused_and_explicit_paths_agree(bias):
    torch.manual_seed(0)
    explicit = MultiHeadAttention(32, 4, bias=bias).double()
    fused = MultiHeadAttention(32, 4, bias=bias, fused=True).double()
    fused.load_state_dict(explicit.state_dict())
    x = torch.randn(3, 9, 32, **f64)
    torch.testing.assert_close(explicit(x), fused(x), atol=1e-10, rtol=0)


@pytest.mark.parametrize("causal", [True, False])
def test_matches_nn_multiheadattention(causal):
    torch.manual_seed(0)
    ours = MultiHeadAttention(32, 4, causal=causal).double()
    ref = nn.MultiheadAttention(32, 4, batch_first=True).double()
    with torch.no_grad():  # same [W_q; W_k; W_v] layout, so the weights copy over one to one
        ours.qkv.weight.copy_(ref.in_proj_weight)
        ours.qkv.bias.copy_(ref.in_proj_bias)
        ours.proj.weight.copy_(ref.out_proj.weight)
        ours.proj.bias.copy_(ref.out_proj.bias)
    x = torch.randn(2, 6, 32, **f64)
    # nn.MultiheadAttention's boolean mask means the opposite: True = may NOT attend.
    mask = ~causal_mask(6) if causal else None
    expected, _ = ref(x, x, x, attn_mask=mask, need_weights=False)
    torch.testing.assert_close(ours(x), expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("fused", [False, True])
def test_incremental_decoding_with_cache_equals_full_forward(fused):
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4, fused=fused).double()
    x = torch.randn(2, 10, 32, **f64)
    full = attn(x)
    cache = KVCache()
    pieces = [attn(x[:, :4], kv_cache=cache)]  # a prompt of 4 tokens...
    pieces += [attn(x[:, t:t + 1], kv_cache=cache) for t in range(4, 7)]  # ...then one token at a time
    pieces.append(attn(x[:, 7:], kv_cache=cache))  # ...and a chunk of 3
    assert len(cache) == 10 and cache.k.shape == (2, 4, 10, 8)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-10, rtol=0)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 2, dropout=0.5)
    x = torch.randn(2, 5, 16)
    attn.eval()
    torch.testing.assert_close(attn(x), attn(x))
    attn.train()
    assert not torch.allclose(attn(x), attn(x))


def test_multi_head_attention_needs_a_positive_number_of_heads():
    from llm_lib.attention import MultiHeadAttention

    for bad in (0, -2, 2.0):
        with pytest.raises(ValueError, match="n_heads must be a positive int"):
            MultiHeadAttention(8, bad)

"""Attention, from one formula to the multi-head layer of a GPT.

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k + M) V

Each query row of Q asks "which keys match me?"; the scores Q Kᵀ say how well, the softmax turns
each row into weights that sum to one, and the output is that weighted average of the value rows.
M masks keys a query may not see (the future, in a language model).

Shape names used in comments: B batch, H heads, T / T_q query positions, T_k key positions,
d_model model width, d_k = d_model / H width of one head.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def causal_mask(T, device=None, past_length=0):
    """Boolean (T, past_length + T) mask, True where a query may attend: to itself and the past.

    >>> causal_mask(3).int().tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 1]]

    `past_length` keys come before the T new queries (a KV cache holds them): query i sits at
    position past_length + i and sees keys 0 .. past_length + i. This is the lower-right-aligned
    triangle; note that PyTorch's `is_causal=True` is upper-left-aligned, which is only the same
    thing when there is no past.
    """
    ones = torch.ones(T, past_length + T, dtype=torch.bool, device=device)
    return ones.tril(diagonal=past_length)


def _check_qkv(q, k, v):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}; "
                            f"convert it with {name}.float()")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., T, d_k), got shape {tuple(t.shape)}")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k must have the same last dimension d_k as q: expected (..., T_k, {q.shape[-1]}), "
                         f"got k of shape {tuple(k.shape)}")
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"v must have one row per key: expected (..., {k.shape[-2]}, d_v), "
                         f"got v of shape {tuple(v.shape)}")
    if not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]:
        raise ValueError(f"q, k and v must share their leading (batch, head) dimensions, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")


def _check_mask(mask, q, scores_shape):
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool and mask.dtype != q.dtype:
        raise TypeError(f"mask must be boolean (True = may attend) or a float mask of q's dtype {q.dtype} "
                        f"(added to the scores), got dtype {mask.dtype}")
    try:
        ok = torch.broadcast_shapes(mask.shape, scores_shape) == scores_shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the attention scores, "
                         f"shape {tuple(scores_shape)} = (..., T_q, T_k); expected e.g. "
                         f"{tuple(scores_shape[-2:])} or (B, 1, T_q, T_k)")


def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    """softmax(q kᵀ / √d_k + M) v, written out; same result as F.scaled_dot_product_attention.

    >>> q = k = v = torch.randn(2, 4, 5, 8)                  # (B, H, T, d_k)
    >>> scaled_dot_product_attention(q, k, v, causal_mask(5)).shape
    torch.Size([2, 4, 5, 8])

    q: (..., T_q, d_k), k: (..., T_k, d_k), v: (..., T_k, d_v) -> (..., T_q, d_v).
    mask, broadcast to (..., T_q, T_k) like PyTorch's attn_mask:
      - boolean: True = may attend (PyTorch's convention; nn.MultiheadAttention's is the opposite);
      - float (q's dtype): added to the scores, so 0 keeps a key and -inf removes it.
    A query row that may attend to no key at all has nothing to average (the softmax would be
    0/0 = NaN). Like PyTorch's F.scaled_dot_product_attention we return zeros for that row, with
    zero gradient, so padding queries are harmless.
    dropout_p: probability of dropping an attention weight (pass 0.0 at evaluation time).
    """
    _check_qkv(q, k, v)
    d_k = q.shape[-1]
    # Dividing by √d_k keeps the scores' variance near 1 whatever the head width, so the softmax
    # does not saturate into a one-hot (whose gradient vanishes).
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., T_q, T_k)
    attends_nowhere = None
    if mask is not None:
        _check_mask(mask, q, scores.shape)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
            empty = ~mask.any(dim=-1, keepdim=True)  # (..., T_q, 1), computed on the small mask
        else:
            scores = scores + mask
            empty = torch.isneginf(mask).all(dim=-1, keepdim=True)
        if empty.any():
            # Give empty rows finite scores so softmax (and its gradient) stays NaN-free; zeroed below.
            attends_nowhere = empty
            scores = scores.masked_fill(attends_nowhere, 0.0)
    weights = torch.softmax(scores, dim=-1)  # (..., T_q, T_k), each row sums to 1
    if attends_nowhere is not None:
        weights = weights.masked_fill(attends_nowhere, 0.0)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v  # (..., T_q, d_v)


class KVCache:
    """Keys and values of the tokens one attention layer has already seen, for fast generation.

    Generating token t+1 needs the keys and values of tokens 0..t; they do not change, so we keep
    them instead of recomputing the whole prefix at every step. One KVCache per layer:
    `caches = [KVCache() for _ in model.blocks]`, then `model(prompt, kv_cache=caches)` and
    `model(next_id, kv_cache=caches)` for each new token (only the new tokens go in).

    k, v: (B, H, T_past, d_k), None before the first call. Stored keys are already rotated when the
    model uses RoPE, so they never need touching again.
    """

    def __init__(self):
        self.k = None
        self.v = None

    def __len__(self):
        return 0 if self.k is None else self.k.shape[-2]

    def update(self, k, v):
        """Append the new (B, H, T_new, d_k) keys and values; return all of them, past first."""
        if self.k is not None:
            k = torch.cat([self.k, k], dim=-2)
            v = torch.cat([self.v, v], dim=-2)
        self.k, self.v = k, v
        return k, v


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention: split into heads, attend, merge, project.

    H heads of width d_k = d_model / H each attend with their own slice of Q, K, V, so different
    heads can look for different things at the same cost as one wide head.
    fused=True computes the same thing with torch's F.scaled_dot_product_attention (a fused
    kernel that never materialises the (T, T) weights); fused=False uses the explicit function above.
    """

    def __init__(self, d_model, n_heads, bias=True, dropout=0.0, fused=False, causal=True):
        super().__init__()
        if not isinstance(n_heads, int) or n_heads < 1:
            raise ValueError(f"n_heads must be a positive int, got {n_heads!r}")
        if d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads} "
                             f"so every head gets d_model / n_heads features")
        self.d_model, self.n_heads, self.d_k = d_model, n_heads, d_model // n_heads
        self.fused, self.causal, self.dropout = fused, causal, dropout
        # One matmul makes Q, K and V for all heads at once: rows [W_q; W_k; W_v], the same layout
        # as nn.MultiheadAttention's in_proj_weight and GPT-2's c_attn.
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)  # mixes the heads' outputs back together
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x, kv_cache=None, rope=None):
        """x: (B, T, d_model) -> (B, T, d_model).

        kv_cache: a KVCache; its keys/values come before x, and x's are appended to it.
        rope: optional callable rope(t, start_pos) rotating q and k of shape (B, H, T, d_k) by their
        positions (llm_lib.model.RotaryEmbedding); start_pos is the number of cached tokens.
        """
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"expected x of shape (B, T, d_model={self.d_model}), got {tuple(x.shape)}")
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(self.d_model, dim=-1)  # 3 x (B, T, d_model)
        # Split heads: (B, T, d_model) -> (B, T, H, d_k) -> (B, H, T, d_k), heads act like a batch dim.
        q, k, v = (split_heads(t, self.n_heads) for t in (q, k, v))  # each (B, H, T, d_k)
        past = 0 if kv_cache is None else len(kv_cache)
        if rope is not None:
            q, k = rope(q, past), rope(k, past)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)  # (B, H, past + T, d_k)
        dropout_p = self.dropout if self.training else 0.0
        if self.fused:
            # is_causal is the fast path but aligns the triangle top-left, right only without a past.
            if self.causal and past == 0:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
            else:
                mask = causal_mask(T, x.device, past) if self.causal else None
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        else:
            mask = causal_mask(T, x.device, past) if self.causal else None
            y = scaled_dot_product_attention(q, k, v, mask, dropout_p)  # (B, H, T, d_k)
        y = merge_heads(y)  # (B, T, d_model)
        return self.resid_dropout(self.proj(y))


# The head bookkeeping MultiHeadAttention.forward uses, and the attention weights themselves, named so
# the book (chapter 4) and tools that display what a trained model attends to can call them.


def split_heads(x, n_heads):
    """(B, T, d_model) -> (B, H, T, d_k): head h gets features h·d_k .. (h+1)·d_k - 1.

    >>> split_heads(torch.zeros(2, 5, 12), n_heads=3).shape
    torch.Size([2, 3, 5, 4])

    The layout of MultiHeadAttention.forward: view the features as (H, d_k), then move H in front
    of T so that each head is a separate (T, d_k) matrix, like an extra batch dimension.
    """
    if x.dim() != 3:
        raise ValueError(f"split_heads expects x of shape (B, T, d_model), got {tuple(x.shape)}")
    B, T, d_model = x.shape
    if d_model % n_heads != 0:
        raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
    return x.view(B, T, n_heads, d_model // n_heads).transpose(1, 2)


def merge_heads(y):
    """(B, H, T, d_k) -> (B, T, H·d_k), undoing split_heads: the heads' outputs side by side.

    >>> x = torch.randn(2, 5, 12)
    >>> torch.equal(merge_heads(split_heads(x, 3)), x)
    True
    """
    if y.dim() != 4:
        raise ValueError(f"merge_heads expects y of shape (B, H, T, d_k), got {tuple(y.shape)}")
    B, H, T, d_k = y.shape
    return y.transpose(1, 2).reshape(B, T, H * d_k)  # reshape copies: after transpose y is not contiguous


def attention_weights(q, k, mask=None):
    """softmax(q kᵀ / √d_k + M): the (..., T_q, T_k) weights that scaled_dot_product_attention
    averages the values with; each row sums to 1 (0 for a row that may attend to no key).

    >>> attention_weights(torch.randn(4, 8), torch.randn(4, 8), causal_mask(4))[0].tolist()
    [1.0, 0.0, 0.0, 0.0]

    Computed by scaled_dot_product_attention itself with v = the identity matrix (value j is the
    one-hot vector of key j, so the weighted average of the values is the row of weights), so the
    weights shown are exactly those of the formula, masking rules included. Costs a (T_k, T_k)
    matmul more than the scores: fine for looking at attention, not for a training loop.
    """
    _check_qkv(q, k, k)
    T_k = k.shape[-2]
    identity = torch.eye(T_k, dtype=k.dtype, device=k.device).expand(*k.shape[:-2], T_k, T_k)
    return scaled_dot_product_attention(q, k, identity, mask)

"""Quantization: store weights in fewer bits, and the GGUF block formats llama.cpp runs.

Two layers:

1. The ideas, in torch: absmax (symmetric) and zero-point (asymmetric) quantization at three
   granularities (one scale per tensor, per output channel, per block of consecutive weights) with a
   choice of rounding. `quantize_tensor` returns a `Quantized` you can dequantize and measure.
2. The formats, in numpy, byte for byte as llama.cpp's `ggml` writes them (and as the `gguf` package's
   `gguf.quants.quantize` / `dequantize` compute them):
     Q8_0  32 weights -> fp16 scale d + 32 int8                       34 bytes, 8.5 bits per weight
     Q4_0  32 weights -> fp16 scale d + 32 4-bit codes (16 bytes)     18 bytes, 4.5 bits per weight
     Q4_K  256 weights -> fp16 d, fp16 dmin, 8 x (6-bit scale, 6-bit min) in 12 bytes,
                          256 4-bit codes (128 bytes)                 144 bytes, 4.5 bits per weight
   Blocks run along the last axis (a row of a weight matrix, the input features of a Linear), so a
   row's length must be a multiple of the block size: other sizes raise a ValueError (pad with
   `pad_to_multiple` first if you must, as llama.cpp's tools would refuse too).

On top: `QuantizedLinear` (keeps the blocks, dequantizes in forward), `quantize_model` (a GPT whose
matrices went through a format) and `export_gguf` / `read_gguf` (the course model as a GGUF file for
llama.cpp and Ollama).
"""
from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# --- part 1: the ideas ----------------------------------------------------------------------------

ROUNDING_MODES = ("nearest", "away", "floor", "stochastic")


def round_values(x, mode="nearest", generator=None):
    """Round a float tensor to integers (still a float tensor).

    nearest: to the nearest integer, ties to even (torch.round, IEEE default);
    away: ties away from zero (C's roundf, what ggml's Q8_0 uses);
    floor: always down (a biased choice, to show why bias matters);
    stochastic: up with probability equal to the fractional part, so the mean error is zero.

    >>> round_values(torch.tensor([0.5, 1.5, -2.5]), "nearest").tolist(), round_values(torch.tensor([0.5, 1.5, -2.5]), "away").tolist()
    ([0.0, 2.0, -2.0], [1.0, 2.0, -3.0])
    """
    if mode == "nearest":
        return torch.round(x)
    if mode == "away":
        return torch.sign(x) * torch.floor(x.abs() + 0.5)
    if mode == "floor":
        return torch.floor(x)
    if mode == "stochastic":
        low = torch.floor(x)
        return low + (torch.rand(x.shape, generator=generator, dtype=x.dtype) < (x - low)).to(x.dtype)
    raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {mode!r}")


@dataclass
class Quantized:
    """Integer codes plus what it takes to map them back: x ≈ (q - zero) · scale, group by group.

    q, scale, zero have shape (n_groups, group_size), (n_groups, 1), (n_groups, 1); `shape` is the
    original tensor's shape and `bits` the code width. Bits used = codes + one fp16 scale (and zero)
    per group: see `bits_per_weight`.
    """

    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    shape: tuple
    bits: int
    scheme: str

    def dequantize(self):
        return ((self.q - self.zero) * self.scale).reshape(self.shape)

    @property
    def bits_per_weight(self):
        n_groups, group = self.q.shape
        extra = 16 if self.scheme == "absmax" else 32  # fp16 scale (+ fp16 zero point)
        return self.bits + extra / group


def _groups(x, granularity, block_size):
    """View x as (n_groups, group_size): each row of the result shares one scale."""
    if x.dim() == 0 or x.numel() == 0:
        raise ValueError(f"need a non-empty tensor with at least one dimension, got shape {tuple(x.shape)}")
    if granularity == "tensor":
        return x.reshape(1, -1)
    if granularity == "channel":  # one scale per output channel = per row of a (out, in) weight
        return x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)
    if granularity == "block":
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {block_size!r}")
        if x.shape[-1] % block_size:
            raise ValueError(f"the last dimension ({x.shape[-1]}) is not a multiple of block_size={block_size}; "
                             f"pad it with pad_to_multiple(x, {block_size}) or choose another block size")
        return x.reshape(-1, block_size)
    raise ValueError(f"granularity must be 'tensor', 'channel' or 'block', got {granularity!r}")


def quantize_tensor(x, bits=8, scheme="absmax", granularity="tensor", block_size=32, rounding="nearest",
                    generator=None):
    """Quantize a float tensor to `bits`-bit integer codes, one scale per group.

    absmax (symmetric): scale = max|x| / (2^(bits-1) - 1), q = round(x / scale) in [-qmax, qmax];
      zero stays exactly zero, but a lopsided group wastes half of the grid.
    zeropoint (asymmetric): scale = (max - min) / (2^bits - 1), zero = round(-min / scale),
      q = round(x / scale) + zero in [0, 2^bits - 1]: the grid spans exactly [min, max].

    >>> quantize_tensor(torch.tensor([0.5, -1.0, 0.25]), bits=8).q.tolist()
    [[64.0, -127.0, 32.0]]
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch tensor, got {type(x).__name__}")
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an int from 2 to 16, got {bits!r}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains inf or nan; quantization needs finite values")
    g = _groups(x.detach().float(), granularity, block_size)  # (n_groups, group_size)
    if scheme == "absmax":
        qmax = 2 ** (bits - 1) - 1
        scale = g.abs().amax(dim=1, keepdim=True) / qmax  # (n_groups, 1)
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)  # an all-zero group: any scale works
        q = round_values(g / scale, rounding, generator).clamp(-qmax, qmax)
        zero = torch.zeros_like(scale)
    elif scheme == "zeropoint":
        qmax = 2 ** bits - 1
        lo = g.amin(dim=1, keepdim=True).clamp(max=0)  # keep 0 on the grid (padding, ReLU outputs)
        hi = g.amax(dim=1, keepdim=True).clamp(min=0)
        scale = (hi - lo) / qmax
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        zero = torch.round(-lo / scale)
        q = (round_values(g / scale, rounding, generator) + zero).clamp(0, qmax)
    else:
        raise ValueError(f"scheme must be 'absmax' or 'zeropoint', got {scheme!r}")
    return Quantized(q=q, scale=scale, zero=zero, shape=tuple(x.shape), bits=bits, scheme=scheme)


def fake_quantize(x, **kwargs):
    """quantize_tensor(x, **kwargs).dequantize(): the values a quantized model really computes with.

    >>> fake_quantize(torch.tensor([0.3, -1.0]), bits=2).tolist()  # grid {-1, 0, 1}
    [0.0, -1.0]
    """
    return quantize_tensor(x, **kwargs).dequantize().to(x.dtype)


def pad_to_multiple(x, multiple):
    """Zero-pad the last dimension of x up to a multiple of `multiple` (returns x if it already is).

    >>> pad_to_multiple(torch.ones(2, 30), 32).shape
    torch.Size([2, 32])
    """
    extra = -x.shape[-1] % multiple
    return F.pad(x, (0, extra)) if extra else x


# --- memory arithmetic -----------------------------------------------------------------------------

def weights_nbytes(n_params, bits_per_weight):
    """Bytes to hold n_params weights at bits_per_weight (scales included in the bits).

    >>> weights_nbytes(8_000_000_000, 16) / 1e9   # an 8B model in BF16
    16.0
    """
    if n_params < 0 or bits_per_weight <= 0:
        raise ValueError(f"need n_params >= 0 and bits_per_weight > 0, got {n_params}, {bits_per_weight}")
    return n_params * bits_per_weight / 8


def kv_cache_nbytes(n_layer, n_kv_heads, head_dim, n_tokens, bytes_per_value=2, batch_size=1):
    """Bytes of the KV cache: a key and a value vector per layer, KV head and token.

    >>> kv_cache_nbytes(36, 8, 128, 32768) / 2**30   # Qwen3-8B, 32k tokens, fp16
    4.5
    """
    for name, v in [("n_layer", n_layer), ("n_kv_heads", n_kv_heads), ("head_dim", head_dim),
                    ("n_tokens", n_tokens), ("batch_size", batch_size)]:
        if not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    return 2 * n_layer * n_kv_heads * head_dim * n_tokens * bytes_per_value * batch_size


# --- part 2: GGUF block formats (numpy, byte-exact with ggml) ---------------------------------------

QK = 32           # weights per block in Q8_0 and Q4_0
QK_K = 256        # weights per super-block in the K-quants
BLOCK_BYTES = {"Q8_0": 2 + QK, "Q4_0": 2 + QK // 2, "Q4_K": 2 + 2 + 12 + QK_K // 2}
BLOCK_SIZE = {"Q8_0": QK, "Q4_0": QK, "Q4_K": QK_K}
QTYPES = ("F32", "Q8_0", "Q4_0", "Q4_K")


def bits_per_weight(qtype):
    """Storage per weight of a GGUF format, scales included.

    >>> bits_per_weight("Q8_0"), bits_per_weight("Q4_0"), bits_per_weight("Q4_K")
    (8.5, 4.5, 4.5)
    """
    if qtype == "F32":
        return 32.0
    _check_qtype(qtype)
    return 8 * BLOCK_BYTES[qtype] / BLOCK_SIZE[qtype]


def _check_qtype(qtype):
    if qtype not in BLOCK_BYTES:
        raise ValueError(f"qtype must be one of {list(BLOCK_BYTES)}, got {qtype!r}")


def _rows_as_blocks(x, block):
    """float32 numpy array (..., n) -> (n_blocks, block), checking the shape first."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"expected a numpy array or torch tensor of floats, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"expected floating-point weights, got dtype {x.dtype}")
    if x.ndim == 0 or x.size == 0:
        raise ValueError(f"need a non-empty array with at least one dimension, got shape {x.shape}")
    if x.shape[-1] % block:
        raise ValueError(f"rows of length {x.shape[-1]} are not a multiple of the block size {block}: "
                         f"GGUF blocks never straddle rows. Pad with pad_to_multiple(x, {block}) or keep this "
                         f"tensor in F32/F16")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError("weights contain inf or nan; they cannot be quantized")
    return x.reshape(-1, block)


def _blocks_of(data, qtype):
    """uint8 array (..., n_bytes) or bytes -> (n_blocks, block_bytes), plus the output shape."""
    _check_qtype(qtype)
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(data, dtype=np.uint8)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise TypeError(f"expected {qtype} blocks as bytes or a uint8 numpy array, got "
                        f"{getattr(data, 'dtype', type(data).__name__)}")
    nb = BLOCK_BYTES[qtype]
    if data.ndim == 0 or data.shape[-1] % nb:
        raise ValueError(f"{qtype} data must be whole blocks of {nb} bytes along the last axis, got shape {data.shape}")
    out_shape = (*data.shape[:-1], data.shape[-1] // nb * BLOCK_SIZE[qtype])
    return data.reshape(-1, nb), out_shape


def _by_chunks(fn, blocks, chunk=4096):
    """fn over groups of blocks: each block is independent, and small groups keep the temporaries
    in cache (one pass over a 4096 x 4096 matrix would allocate several 64 MB arrays)."""
    return np.concatenate([fn(blocks[i:i + chunk]) for i in range(0, len(blocks), chunk)], axis=0)


def round_half_away(x):
    """C's roundf on float32 numpy arrays: halves go away from zero (ggml's Q8_0 rounding).

    >>> round_half_away(np.array([0.5, 1.5, -2.5], dtype=np.float32)).tolist()
    [1.0, 2.0, -3.0]
    """
    a = np.abs(x)
    whole = np.floor(a)
    a -= whole
    a *= 2
    np.floor(a, out=a)  # 1 when the fraction is >= 0.5, else 0 (exact: no x + 0.5 rounding trap)
    a += whole
    return np.copysign(a, x, out=a)


def quantize_q8_0(x):
    """Q8_0: per block of 32, d = max|x| / 127 (stored fp16), q = roundf(x / d) as int8.

    Returns uint8 of shape (..., n / 32 * 34): each block is [d: 2 bytes little-endian fp16][32 x int8].
    Same bytes as gguf.quants.quantize(x, GGMLQuantizationType.Q8_0).

    >>> quantize_q8_0(np.ones(32, np.float32)).tobytes()[:4].hex()  # d = 1/127 in fp16, then q = 127
    '08207f7f'
    """
    blocks = _rows_as_blocks(x, QK)  # (n_blocks, 32) float32, shape checked
    shape = (*np.shape(x)[:-1], np.shape(x)[-1] // QK * BLOCK_BYTES["Q8_0"])
    return _by_chunks(_q8_0_blocks, blocks).reshape(shape)


def _q8_0_blocks(blocks):  # (n_blocks, 32) float32 -> (n_blocks, 34) uint8
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)  # (n_blocks, 1)
    with np.errstate(divide="ignore"):
        inv_d = np.where(d == 0, np.float32(0), np.float32(1) / d)  # ggml multiplies by 1/d, not divides
    v = blocks * inv_d
    q = round_half_away(v).astype(np.int8)  # (n_blocks, 32) in [-127, 127]
    return np.concatenate([d.astype(np.float16).view(np.uint8), q.view(np.uint8)], axis=1)


def dequantize_q8_0(data):
    """Q8_0 blocks (uint8 (..., n_bytes) or bytes) -> float32 (..., n): x = d · q."""
    blocks, shape = _blocks_of(data, "Q8_0")
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (n_blocks, 1)
    q = blocks[:, 2:].view(np.int8).astype(np.float32)  # (n_blocks, 32)
    return (d * q).reshape(shape)


def pack_nibbles(codes):
    """(n_blocks, 32) codes in 0..15 -> (n_blocks, 16) bytes: byte j = codes[j] | codes[j + 16] << 4.

    The first half of the block sits in the low nibbles and the second half in the high ones,
    so unpacking is two vector ops (mask, shift) instead of an interleave.

    >>> pack_nibbles(np.arange(32, dtype=np.uint8).reshape(1, 32) % 16)[0, :2].tolist()
    [0, 17]
    """
    half = codes.shape[-1] // 2
    return (codes[..., :half] | (codes[..., half:] << 4)).astype(np.uint8)


def unpack_nibbles(packed):
    """Inverse of pack_nibbles: (n_blocks, 16) bytes -> (n_blocks, 32) codes."""
    return np.concatenate([packed & 0x0F, packed >> 4], axis=-1)


def quantize_q4_0(x):
    """Q4_0: per block of 32, take the value m with the largest magnitude (sign kept), d = m / -8,
    code = min(15, trunc(x / d + 8.5)) in 0..15, so x ≈ d · (code - 8). Stored as [d: fp16][16 bytes].

    Using the signed extreme puts it exactly on code 0 (-8 · d = m); the other end of the grid,
    +7 · d, is one step short, which is why the largest value chooses the sign.
    Same bytes as gguf.quants.quantize(x, GGMLQuantizationType.Q4_0).
    """
    blocks = _rows_as_blocks(x, QK)  # (n_blocks, 32) float32, shape checked
    shape = (*np.shape(x)[:-1], np.shape(x)[-1] // QK * BLOCK_BYTES["Q4_0"])
    return _by_chunks(_q4_0_blocks, blocks).reshape(shape)


def _q4_0_blocks(blocks):  # (n_blocks, 32) float32 -> (n_blocks, 18) uint8
    pick = np.abs(blocks).argmax(axis=1)[:, None]  # first index of the largest |x|
    m = np.take_along_axis(blocks, pick, axis=1)  # (n_blocks, 1), sign kept
    d = m / np.float32(-8)
    with np.errstate(divide="ignore"):
        inv_d = np.where(d == 0, np.float32(0), np.float32(1) / d)
    codes = np.clip(np.trunc(blocks * inv_d + np.float32(8.5)), 0, 15).astype(np.uint8)  # (n_blocks, 32)
    return np.concatenate([d.astype(np.float16).view(np.uint8), pack_nibbles(codes)], axis=1)


def dequantize_q4_0(data):
    """Q4_0 blocks -> float32: x = d · (code - 8)."""
    blocks, shape = _blocks_of(data, "Q4_0")
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (n_blocks, 1)
    codes = unpack_nibbles(blocks[:, 2:]).astype(np.int8) - np.int8(8)  # (n_blocks, 32) in -8..7
    return (d * codes.astype(np.float32)).reshape(shape)


def _nearest_int(x):
    """ggml's nearest_int: round to nearest, ties to even (the FPU's default), as int32."""
    return np.rint(x).astype(np.int32)


def _seq_sum(a):
    """Row sums of a (n, k) float32 array added left to right, as a C loop does: numpy's pairwise
    summation rounds differently, and near-ties in the grid search would then pick other codes.
    Returns (n, 1)."""
    acc = a[:, 0].copy()
    for i in range(1, a.shape[1]):
        acc += a[:, i]
    return acc[:, None]


def _fit_scale_min(x, weights, nmax=15, rmin=-1.0, rdelta=0.1, nstep=20):
    """Vectorised port of ggml's make_qkx2_quants for rows x (n, 32): find scale s >= 0 and offset
    -min >= 0 so that x ≈ s · L + min with L in 0..nmax, minimising the weighted squared error.

    Starts from the plain min/max grid, then tries nstep+1 slightly stretched grids, each followed
    by a weighted least-squares refit of (scale, min); keeps the best. As in ggml, a better fit's min
    becomes the origin of the grids tried after it. Returns (scale, -min, L).
    """
    f32 = np.float32
    lo = np.minimum(x.min(axis=1, keepdims=True), f32(0))  # (n, 1)
    hi = x.max(axis=1, keepdims=True)
    flat = hi == lo  # every value equal and >= 0 (e.g. all zero): nothing to fit
    lo = np.where(flat, hi - f32(1), lo)  # any span will do for those rows; their result is replaced below
    sum_w = _seq_sum(weights)
    sum_x = _seq_sum(weights * x)

    iscale = f32(nmax) / (hi - lo)
    scale = f32(1) / iscale
    L = np.clip(_nearest_int(iscale * (x - lo)), 0, nmax)
    best = _seq_sum(weights * (scale * L + lo - x) ** 2)
    cur_min = lo
    for step in range(nstep + 1):
        iscale = (f32(rmin) + f32(rdelta) * f32(step) + f32(nmax)) / (hi - cur_min)
        Laux = np.clip(_nearest_int(iscale * (x - cur_min)), 0, nmax).astype(np.float32)
        sum_l = _seq_sum(weights * Laux)
        sum_l2 = _seq_sum(weights * Laux * Laux)
        sum_xl = _seq_sum(weights * Laux * x)
        D = sum_w * sum_l2 - sum_l * sum_l
        ok = D > 0
        Dsafe = np.where(ok, D, f32(1))
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / Dsafe
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / Dsafe
        positive = this_min > 0  # the offset may only push down: refit the scale alone
        this_scale = np.where(positive, sum_xl / np.where(sum_l2 > 0, sum_l2, f32(1)), this_scale)
        this_min = np.where(positive, f32(0), this_min)
        err = _seq_sum(weights * (this_scale * Laux + this_min - x) ** 2)
        better = ok & (err < best)
        L = np.where(better, Laux, L)
        best = np.where(better, err, best)
        scale = np.where(better, this_scale, scale)
        cur_min = np.where(better, this_min, cur_min)
    scale = np.where(flat, f32(0), scale)
    cur_min = np.where(flat, np.minimum(hi, f32(0)), cur_min)
    L = np.where(flat, 0, L)
    return scale.astype(np.float32), (-cur_min).astype(np.float32), L.astype(np.uint8)


def _pack_scales_k4(ls, lm):
    """8 six-bit scales and 8 six-bit mins per super-block (n, 8) -> 12 bytes (n, 12).

    Bytes 0-3: scale j (low 6 bits) + top 2 bits of scale j+4; bytes 4-7: min j + top 2 bits of
    min j+4; bytes 8-11: low 4 bits of scale j+4 | low 4 bits of min j+4 << 4.
    """
    out = np.zeros((ls.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    out[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:] & 0x0F) | ((lm[:, 4:] & 0x0F) << 4)
    return out


def _unpack_scales_k4(packed):
    """12 bytes (n, 12) -> six-bit scales and mins, each (n, 8)."""
    a, b, c = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    sc = np.concatenate([a & 0x3F, (c & 0x0F) | ((a >> 6) << 4)], axis=1)
    mn = np.concatenate([b & 0x3F, (c >> 4) | ((b >> 6) << 4)], axis=1)
    return sc, mn


def quantize_q4_k(x):
    """Q4_K: super-blocks of 256 = 8 sub-blocks of 32, x ≈ d·sc_j · code - dmin·m_j with 4-bit codes.

    Each sub-block j gets its own scale and offset (an asymmetric, zero-point-like grid), fitted by
    weighted least squares (weights av|x| + |x|, as in ggml). Those 8 scales and 8 offsets are then
    quantized themselves to 6 bits against two fp16 super-scales d and dmin: two-level quantization.
    Layout (144 bytes): [d fp16][dmin fp16][12 bytes of 6-bit scales/mins][128 bytes of codes,
    each 32-byte group holding sub-block 2i in low nibbles and 2i+1 in high nibbles].

    A port of ggml's quantize_row_q4_K_ref (same float32 operations in the same order, so the same
    bytes: checked against ggml's C code, see tests/test_quantize.py). The gguf package can only
    dequantize Q4_K, which it does identically to dequantize_q4_k.
    """
    blocks = _rows_as_blocks(x, QK_K)  # (n, 256) float32, shape checked
    shape = (*np.shape(x)[:-1], np.shape(x)[-1] // QK_K * BLOCK_BYTES["Q4_K"])
    return _by_chunks(_q4_k_blocks, blocks, chunk=2048).reshape(shape)


def _q4_k_blocks(blocks):  # (n, 256) float32 -> (n, 144) uint8
    f32 = np.float32
    n = blocks.shape[0]
    sub = blocks.reshape(n * 8, 32)  # (8n, 32) sub-blocks
    av_x = np.sqrt(_seq_sum(sub * sub) / f32(32))
    scales, mins, L = _fit_scale_min(sub, av_x + np.abs(sub))  # (8n, 1), (8n, 1), (8n, 32)
    scales, mins, L = scales.reshape(n, 8), mins.reshape(n, 8), L.reshape(n, 8, 32)
    max_scale = np.maximum(scales.max(axis=1, keepdims=True), f32(0))  # (n, 1)
    max_min = np.maximum(mins.max(axis=1, keepdims=True), f32(0))
    inv_scale = np.where(max_scale > 0, f32(63) / np.where(max_scale > 0, max_scale, f32(1)), f32(0))
    inv_min = np.where(max_min > 0, f32(63) / np.where(max_min > 0, max_min, f32(1)), f32(0))
    ls = np.minimum(_nearest_int(inv_scale * scales), 63).astype(np.uint8)  # (n, 8) six-bit
    lm = np.minimum(_nearest_int(inv_min * mins), 63).astype(np.uint8)
    d16 = (max_scale / f32(63)).astype(np.float16)
    dmin16 = (max_min / f32(63)).astype(np.float16)
    # Re-quantize every weight against the scales actually stored (fp16 x six-bit), not the fitted ones.
    d = d16.astype(np.float32) * ls.astype(np.float32)  # (n, 8)
    dm = dmin16.astype(np.float32) * lm.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        codes = np.clip(_nearest_int((blocks.reshape(n, 8, 32) + dm[..., None]) / d[..., None]), 0, 15)
    codes = np.where((d == 0)[..., None], L, codes).astype(np.uint8)  # (n, 8, 32)
    pairs = codes.reshape(n, 4, 2, 32)  # sub-blocks (0,1), (2,3), ...: low and high nibbles of 32 bytes
    qs = (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(n, 128)
    return np.concatenate([d16.view(np.uint8), dmin16.view(np.uint8), _pack_scales_k4(ls, lm), qs], axis=1)


def dequantize_q4_k(data):
    """Q4_K blocks -> float32: x = (d · sc_j) · code - (dmin · m_j) in sub-block j."""
    blocks, shape = _blocks_of(data, "Q4_K")
    n = blocks.shape[0]
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)  # (n, 1)
    dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    sc, mn = _unpack_scales_k4(blocks[:, 4:16])  # (n, 8) each
    qs = blocks[:, 16:].reshape(n, 4, 1, 32)
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(n, 8, 32).astype(np.float32)
    scale = (d * sc.astype(np.float32))[..., None]  # (n, 8, 1)
    offset = (dmin * mn.astype(np.float32))[..., None]
    return (scale * codes - offset).reshape(shape)


QUANTIZERS = {"Q8_0": quantize_q8_0, "Q4_0": quantize_q4_0, "Q4_K": quantize_q4_k}
DEQUANTIZERS = {"Q8_0": dequantize_q8_0, "Q4_0": dequantize_q4_0, "Q4_K": dequantize_q4_k}


def quantize(x, qtype):
    """Blocks of x (rows along the last axis) in GGUF format `qtype` ("Q8_0", "Q4_0", "Q4_K")."""
    _check_qtype(qtype)
    return QUANTIZERS[qtype](x)


def dequantize(data, qtype):
    """float32 weights back from `qtype` blocks."""
    _check_qtype(qtype)
    return DEQUANTIZERS[qtype](data)


# --- a quantized model ------------------------------------------------------------------------------

class QuantizedLinear(nn.Module):
    """A Linear layer that stores its weight as GGUF blocks and dequantizes them in forward.

    Memory holds the blocks (e.g. 4.5 bits per weight for Q4_0); compute runs in float32 on the
    dequantized matrix, which is what a CPU kernel does block by block without materialising it.

    >>> layer = QuantizedLinear.from_linear(nn.Linear(64, 8), "Q8_0")
    >>> layer(torch.randn(2, 64)).shape
    torch.Size([2, 8])
    """

    def __init__(self, blocks, qtype, in_features, out_features, bias=None):
        super().__init__()
        _check_qtype(qtype)
        self.qtype, self.in_features, self.out_features = qtype, in_features, out_features
        self.register_buffer("blocks", torch.from_numpy(np.ascontiguousarray(blocks)))  # (out, in/bs*bytes) uint8
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear, qtype):
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear takes an nn.Linear, got {type(linear).__name__}")
        blocks = quantize(linear.weight.detach(), qtype)  # rows = output channels, blocks along inputs
        return cls(blocks, qtype, linear.in_features, linear.out_features, linear.bias)

    def dequantized_weight(self):  # (out, in) float32
        return torch.from_numpy(dequantize(self.blocks.cpu().numpy(), self.qtype))

    def forward(self, x):  # (..., in) -> (..., out)
        return F.linear(x, self.dequantized_weight().to(x.device, x.dtype), self.bias)

    def nbytes(self):
        return self.blocks.numel() + (0 if self.bias is None else 4 * self.bias.numel())

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, qtype={self.qtype}"


def tensor_qtype(shape, qtype):
    """The format a weight of `shape` gets when a model is quantized to `qtype` (llama.cpp's rules,
    simplified): vectors (norms, biases) stay F32; a matrix whose rows do not fit the block size falls
    back to a 32-block type (Q4_K -> Q4_0 here; llama.cpp picks Q5_0), or to F32 if even that fails.

    >>> tensor_qtype((768, 192), "Q4_K"), tensor_qtype((192, 768), "Q4_K"), tensor_qtype((192,), "Q8_0")
    ('Q4_0', 'Q4_K', 'F32')
    """
    if qtype == "F32" or len(shape) < 2:
        return "F32"
    _check_qtype(qtype)
    if shape[-1] % BLOCK_SIZE[qtype] == 0:
        return qtype
    fallback = "Q4_0" if qtype == "Q4_K" else qtype
    return fallback if shape[-1] % BLOCK_SIZE[fallback] == 0 else "F32"


def quantize_model(model, qtype):
    """A copy of a GPT whose matrices went through GGUF format `qtype`, as llama.cpp would run it.

    Every Linear becomes a QuantizedLinear; the token embedding (tied to the output head) is quantized
    once: the head is a QuantizedLinear of its blocks and the embedding table holds the same
    dequantized values. Position embeddings, norms and biases stay float32 (as in our GGUF export).
    """
    from llm_lib.model import GPT

    if not isinstance(model, GPT):
        raise TypeError(f"quantize_model takes an llm_lib.model.GPT, got {type(model).__name__}")
    if qtype not in QTYPES:
        raise ValueError(f"qtype must be one of {QTYPES}, got {qtype!r}")
    q = copy.deepcopy(model).eval()
    if qtype == "F32":
        return q
    with torch.no_grad():
        for block in q.blocks:
            for parent, name in [(block.attn, "qkv"), (block.attn, "proj"), (block.mlp, "fc"), (block.mlp, "proj")]:
                linear = getattr(parent, name)
                t = tensor_qtype(tuple(linear.weight.shape), qtype)
                if t != "F32":
                    setattr(parent, name, QuantizedLinear.from_linear(linear, t))
        emb = q.tok_emb.weight  # (V, C), also the head's weight when tied
        t = tensor_qtype(tuple(emb.shape), qtype)
        if t != "F32":
            head = QuantizedLinear(quantize(emb, t), t, emb.shape[1], emb.shape[0])
            q.tok_emb = nn.Embedding.from_pretrained(head.dequantized_weight(), freeze=True)
            if q.config.tie_weights:
                q.lm_head = head
        if not q.config.tie_weights:
            t = tensor_qtype(tuple(q.lm_head.weight.shape), qtype)
            if t != "F32":
                q.lm_head = QuantizedLinear.from_linear(q.lm_head, t)
    return q


def fake_quantize_model(model, **kwargs):
    """A copy of a GPT with every matrix (Linear weights and the token embedding) replaced by
    fake_quantize(weight, **kwargs): to compare schemes, bit widths and granularities quickly.

    >>> fake_quantize_model(model, bits=4, granularity="tensor")   # one scale per matrix
    """
    q = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, module in q.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)) and module.weight.dim() == 2 and name != "pos_emb":
                if name == "lm_head" and q.config.tie_weights:
                    continue  # the same matrix as tok_emb, already done
                module.weight.copy_(fake_quantize(module.weight, **kwargs))
    return q


# --- GGUF files -------------------------------------------------------------------------------------

FILE_TYPES = {"F32": 0, "Q4_0": 2, "Q8_0": 7, "Q4_K": 14}  # gguf.LlamaFileType: ALL_F32, MOSTLY_Q4_0, _Q8_0, _Q4_K_S


def gguf_tensor_names(n_layer, tied=True):
    """Our parameter names -> the names llama.cpp's gpt2 loader looks for.

    >>> gguf_tensor_names(1)["blocks.0.attn.qkv.weight"]
    'blk.0.attn_qkv.weight'
    """
    names = {"tok_emb.weight": "token_embd.weight", "pos_emb.weight": "position_embd.weight",
             "norm_f.weight": "output_norm.weight", "norm_f.bias": "output_norm.bias"}
    for i in range(n_layer):
        for ours, theirs in [("norm1", "attn_norm"), ("attn.qkv", "attn_qkv"), ("attn.proj", "attn_output"),
                             ("norm2", "ffn_norm"), ("mlp.fc", "ffn_up"), ("mlp.proj", "ffn_down")]:
            for kind in ("weight", "bias"):
                names[f"blocks.{i}.{ours}.{kind}"] = f"blk.{i}.{theirs}.{kind}"
    if not tied:
        names["lm_head.weight"] = "output.weight"  # tied: llama.cpp reuses token_embd for the output
    return names


def _byte_level_unicode():
    """GPT-2's map from the 256 bytes to printable characters, which GGUF's "gpt2" vocab uses."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _tokenizer_fields(tokenizer, vocab_size):
    """Token strings, token types and merges in llama.cpp's "gpt2" (byte-level BPE) convention."""
    from gguf import TokenType

    ids = sorted(tokenizer.vocab)
    if ids != list(range(vocab_size)):
        raise ValueError(f"the tokenizer's ids must be exactly 0..{vocab_size - 1} to match the model's "
                         f"vocab_size, got {len(ids)} ids from {ids[0]} to {ids[-1]}")
    to_char = _byte_level_unicode()
    text = lambda b: "".join(to_char[c] for c in b)  # noqa: E731
    special = {i: s for s, i in tokenizer.special_tokens.items()}  # id -> string, kept as written
    tokens = [special[i] if i in special else text(tokenizer.vocab[i]) for i in ids]
    types = [TokenType.CONTROL if i in special else TokenType.NORMAL for i in ids]
    merges = [f"{text(a)} {text(b)}" for a, b in tokenizer.merges]
    return tokens, types, merges


def gguf_tensors(model, qtype):
    """[(gguf name, numpy data, GGMLQuantizationType)] for every tensor of a GPT-2-style GPT."""
    from gguf import GGMLQuantizationType

    c = model.config
    if c.norm != "layernorm" or c.pos != "learned" or c.mlp != "gelu" or not c.bias:
        raise ValueError("export_gguf writes llama.cpp's gpt2 architecture: it needs norm='layernorm', "
                         "pos='learned', mlp='gelu' and bias=True")
    names = gguf_tensor_names(c.n_layer, c.tie_weights)
    state = model.state_dict()
    out = []
    for ours, theirs in names.items():
        w = state[ours].detach().cpu().float().numpy()
        t = "F32" if ours == "pos_emb.weight" else tensor_qtype(w.shape, qtype)
        data = w if t == "F32" else quantize(w, t)
        out.append((theirs, data, GGMLQuantizationType[t]))
    return out


def export_gguf(model, path, qtype="Q8_0", tokenizer=None, name="llm-lib course model"):
    """Write a GPT-2-style GPT as a GGUF file that llama.cpp's gpt2 loader reads; returns the path.

    Matrices are stored in `qtype` (see tensor_qtype for the fallbacks), vectors and position
    embeddings in F32. With `tokenizer` (a BPETokenizer whose ids are 0..vocab_size-1) the file
    carries a "gpt2" byte-level BPE vocabulary, so `llama-cli -m file.gguf -p "ROMEO."` works; without
    it the file is vocab-less (tokenizer.ggml.model = "none", with gpt2.vocab_size so that llama.cpp
    can size its token table): llama.cpp loads it, but you feed and read token ids yourself. Written to a temporary file and renamed, so the path never holds half a file.
    """
    from gguf import GGML_QUANT_VERSION, GGUFWriter

    if qtype not in QTYPES:
        raise ValueError(f"qtype must be one of {QTYPES}, got {qtype!r}")
    c = model.config
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer = GGUFWriter(tmp, "gpt2")
        writer.add_name(name)
        writer.add_context_length(c.context_length)
        writer.add_embedding_length(c.d_model)
        writer.add_feed_forward_length(c.hidden_dim)
        writer.add_block_count(c.n_layer)
        writer.add_head_count(c.n_head)
        writer.add_layer_norm_eps(c.layer_norm_eps)
        writer.add_vocab_size(c.vocab_size)  # llama.cpp sizes a vocab-less model's token table from this
        writer.add_file_type(FILE_TYPES[qtype])
        writer.add_quantization_version(GGML_QUANT_VERSION)
        if tokenizer is None:
            writer.add_tokenizer_model("none")
        else:
            tokens, types, merges = _tokenizer_fields(tokenizer, c.vocab_size)
            writer.add_tokenizer_model("gpt2")
            writer.add_tokenizer_pre("gpt-2")  # GPT-2's pre-tokenizer regex, which ours uses
            writer.add_token_list(tokens)
            writer.add_token_types(types)
            writer.add_token_merges(merges)
            eot = tokenizer.special_tokens.get("<|endoftext|>")
            if eot is not None:
                writer.add_bos_token_id(eot)
                writer.add_eos_token_id(eot)
                writer.add_add_bos_token(False)
        for tname, data, ggml_type in gguf_tensors(model, qtype):
            writer.add_tensor(tname, data, raw_dtype=ggml_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_gguf(path):
    """(metadata, tensors) of a GGUF file: metadata {key: value} (strings and numbers; arrays of
    strings as lists), tensors {name: (float32 array dequantized in numpy shape (rows, cols), qtype)}."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(path)
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if field.types and field.types[0] == GGUFValueType.ARRAY:
            if len(field.types) > 1 and field.types[1] == GGUFValueType.STRING:
                meta[key] = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
            else:
                meta[key] = [field.parts[i].tolist()[0] for i in field.data]
        elif field.types and field.types[0] == GGUFValueType.STRING:
            meta[key] = bytes(field.parts[field.data[0]]).decode("utf-8")
        else:
            meta[key] = field.parts[field.data[0]].tolist()[0]
    tensors = {}
    for t in reader.tensors:
        qname = t.tensor_type.name
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))  # GGUF lists ne[0] (row length) first
        if qname == "F32":
            values = np.asarray(t.data, dtype=np.float32).reshape(shape)
        else:
            values = dequantize(np.asarray(t.data), qname).reshape(shape)
        tensors[t.name] = (values, qname)
    return meta, tensors


def gguf_nbytes(model, qtype):
    """Bytes of a GPT's weights when exported as `qtype` (tensor data only, as in export_gguf:
    matrices in their format, vectors and position embeddings in F32).

    >>> gguf_nbytes(model, "Q8_0") * 8 / model.num_params()   # bits per weight, scales included
    """
    c = model.config
    total = 0
    for ours in gguf_tensor_names(c.n_layer, c.tie_weights):
        shape = tuple(model.state_dict()[ours].shape)
        t = "F32" if ours == "pos_emb.weight" else tensor_qtype(shape, qtype)
        n = int(np.prod(shape))
        total += 4 * n if t == "F32" else n // BLOCK_SIZE[t] * BLOCK_BYTES[t]
    return total

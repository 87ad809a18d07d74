"""A GPT: token embeddings, a stack of transformer blocks, and a head that predicts the next token.

One config covers GPT-2 (the defaults) and the Llama-style changes as options of the same model:
    GPTConfig(norm="rmsnorm", pos="rope", mlp="swiglu", bias=False, tie_weights=False)

Shape names used in comments: B batch, T positions, C = d_model, V vocab_size, H heads, d_k = C / H.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from llm_lib.attention import MultiHeadAttention


@dataclass
class GPTConfig:
    """Everything that fixes a GPT's shape. The defaults are GPT-2 small (124M parameters)."""

    vocab_size: int = 50257
    context_length: int = 1024     # longest sequence the model accepts (learned positions end here)
    n_layer: int = 12
    n_head: int = 12
    d_model: int = 768
    dropout: float = 0.0
    bias: bool = True              # biases in Linear layers and LayerNorms (GPT-2: True, Llama: False)
    norm: str = "layernorm"        # "layernorm" (GPT-2) or "rmsnorm" (Llama)
    pos: str = "learned"           # "learned" position embeddings (GPT-2) or "rope" (Llama)
    mlp: str = "gelu"              # "gelu" (GPT-2) or "swiglu" (Llama)
    tie_weights: bool = True       # output head shares the token embedding matrix (GPT-2)
    layer_norm_eps: float = 1e-5   # eps of LayerNorm / RMSNorm
    d_ff: int | None = None        # MLP hidden width; None: 4·C for gelu, 8/3·C (rounded up to 8) for swiglu
    rope_theta: float = 10000.0    # RoPE base: frequencies theta^(-2i/d_k)
    fused_attention: bool = True   # torch's fused attention kernel; False runs the explicit formula

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "n_layer", "n_head", "d_model"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout is a probability in [0, 1), got {self.dropout}")
        choices = {"norm": ("layernorm", "rmsnorm"), "pos": ("learned", "rope"), "mlp": ("gelu", "swiglu")}
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"GPTConfig.{field} must be one of {allowed}, got {getattr(self, field)!r}")
        if self.d_model % self.n_head != 0:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_head={self.n_head}")
        if self.pos == "rope" and (self.d_model // self.n_head) % 2 != 0:
            raise ValueError(f"RoPE rotates pairs of features, so the head width d_model/n_head "
                             f"= {self.d_model // self.n_head} must be even")

    @property
    def hidden_dim(self):
        """Width of the MLP's hidden layer. SwiGLU has three matrices instead of two, so Llama
        shrinks it to 2/3 of 4·C to keep the parameter count about the same."""
        if self.d_ff is not None:
            return self.d_ff
        return 4 * self.d_model if self.mlp == "gelu" else 8 * math.ceil(8 * self.d_model / 3 / 8)


class RMSNorm(nn.Module):
    """x / RMS(x) · g: LayerNorm without subtracting the mean and without a bias (Llama).

    Cheaper than LayerNorm and works as well in practice: the rescaling is what matters.
    """

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):  # (..., C) -> (..., C)
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension.

    >>> rotate_half(torch.tensor([1., 2., 3., 4.])).tolist()
    [-3.0, -4.0, 1.0, 2.0]
    """
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class RotaryEmbedding(nn.Module):
    """RoPE: rotate each pair of query/key features by an angle proportional to the position.

    Pair i turns by m·θ_i at position m, θ_i = theta^(-2i/d_k). A query at m and a key at n then
    meet at angle (m - n)·θ_i: the score q·k depends only on their distance, not on where they are.

    Layout: "rotate-half" (as in Llama on Hugging Face and GPT-NeoX), which pairs feature i with
    feature i + d_k/2, rather than the interleaved pairs (2i, 2i+1) of RoFormer and Meta's Llama
    code. Both give the same model up to a fixed reordering of the q/k features (the scores do not
    change); we pick rotate-half because it is two slices and a concat, with no complex numbers or
    strided reshapes, and because Hugging Face checkpoints already use it.
    """

    def __init__(self, d_k, context_length, theta=10000.0):
        super().__init__()
        inv_freq = theta ** (-torch.arange(0, d_k, 2, dtype=torch.float64) / d_k)  # (d_k/2,) θ_i
        angles = torch.outer(torch.arange(context_length, dtype=torch.float64), inv_freq)  # (T_max, d_k/2)
        angles = torch.cat([angles, angles], dim=-1)  # (T_max, d_k): feature i and i + d_k/2 share θ_i
        # Tables, not parameters; not saved in checkpoints since they follow from the config.
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x, start_pos=0):  # x: (B, H, T, d_k), positions start_pos .. start_pos + T - 1
        T = x.shape[-2]
        cos, sin = self.cos[start_pos:start_pos + T], self.sin[start_pos:start_pos + T]  # (T, d_k)
        # 2-D rotation of each pair (a, b): (a cos - b sin, b cos + a sin).
        return x * cos + rotate_half(x) * sin


class MLP(nn.Module):
    """GPT-2's feed-forward layer: widen, GELU, project back. Applied to each position on its own."""

    def __init__(self, config):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.hidden_dim, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2 was trained with the tanh approximation
        self.proj = nn.Linear(config.hidden_dim, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        return self.dropout(self.proj(self.gelu(self.fc(x))))


class SwiGLU(nn.Module):
    """Llama's feed-forward layer: proj(silu(gate(x)) * up(x)).

    The gate branch decides, feature by feature, how much of the up branch to let through; this
    multiplicative gating trains to a lower loss than a plain GELU MLP of the same size.
    """

    def __init__(self, config):
        super().__init__()
        self.gate = nn.Linear(config.d_model, config.hidden_dim, bias=config.bias)
        self.up = nn.Linear(config.d_model, config.hidden_dim, bias=config.bias)
        self.proj = nn.Linear(config.hidden_dim, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        return self.dropout(self.proj(F.silu(self.gate(x)) * self.up(x)))


def make_norm(config):
    if config.norm == "rmsnorm":
        return RMSNorm(config.d_model, eps=config.layer_norm_eps)
    return nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)).

    Normalising the input of each branch (not the residual stream itself) leaves a clean identity
    path from the embeddings to the output, which is what lets deep stacks train stably.
    """

    def __init__(self, config):
        super().__init__()
        self.norm1 = make_norm(config)
        self.attn = MultiHeadAttention(config.d_model, config.n_head, bias=config.bias,
                                       dropout=config.dropout, fused=config.fused_attention)
        self.norm2 = make_norm(config)
        self.mlp = SwiGLU(config) if config.mlp == "swiglu" else MLP(config)

    def forward(self, x, kv_cache=None, rope=None):  # (B, T, C) -> (B, T, C)
        x = x + self.attn(self.norm1(x), kv_cache=kv_cache, rope=rope)
        x = x + self.mlp(self.norm2(x))
        return x


class GPT(nn.Module):
    """GPT(config): token ids (B, T) -> next-token logits (B, T, V), one prediction per position."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        # Attention alone does not know token order; learned positions add it to the input,
        # RoPE instead rotates queries and keys inside every attention layer.
        self.pos_emb = nn.Embedding(config.context_length, config.d_model) if config.pos == "learned" else None
        self.rope = (RotaryEmbedding(config.d_model // config.n_head, config.context_length, config.rope_theta)
                     if config.pos == "rope" else None)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm_f = make_norm(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_weights:
            # Reading a token in and writing it out use one matrix: saves V·C parameters.
            self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        # GPT-2: each block adds two branches to the residual stream, so its variance grows with
        # depth; scaling the branches' last projections by 1/√(2·n_layer) keeps it near constant.
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self):
        """Number of parameters; a tied embedding/head matrix counts once."""
        return count_parameters(self)

    def forward(self, idx, targets=None, kv_cache=None):
        """idx: (B, T) token ids -> logits (B, T, V); with targets (B, T): (logits, mean loss).

        Targets equal to -100 are ignored by the loss (PyTorch's and Hugging Face's convention).
        kv_cache: list of one attention.KVCache per layer; idx then continues the cached tokens.
        """
        if not isinstance(idx, torch.Tensor) or idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"idx must be a tensor of token ids (torch.long), got "
                            f"{getattr(idx, 'dtype', type(idx).__name__)}")
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (B, T), got {tuple(idx.shape)}; add a batch dim with idx[None]")
        B, T = idx.shape
        if kv_cache is not None and len(kv_cache) != len(self.blocks):
            raise ValueError(f"kv_cache needs one KVCache per layer ({len(self.blocks)}), got {len(kv_cache)}")
        past = 0 if kv_cache is None else len(kv_cache[0])
        if past + T > self.config.context_length:
            raise ValueError(f"sequence of length {past + T} ({past} cached + {T} new) exceeds the model's "
                             f"context_length={self.config.context_length}; crop idx to its last "
                             f"{self.config.context_length} tokens")
        if idx.numel() and (idx.min() < 0 or idx.max() >= self.config.vocab_size):
            raise ValueError(f"token ids must lie in [0, vocab_size={self.config.vocab_size}), "
                             f"got values from {idx.min().item()} to {idx.max().item()}")

        x = self.tok_emb(idx)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(past, past + T, device=idx.device))  # (T, C) broadcasts over B
        x = self.dropout(x)
        for i, block in enumerate(self.blocks):
            x = block(x, kv_cache=None if kv_cache is None else kv_cache[i], rope=self.rope)
        logits = self.lm_head(self.norm_f(x))  # (B, T, V)
        if targets is None:
            return logits
        if targets.shape != idx.shape:
            raise ValueError(f"targets must have the shape of idx {tuple(idx.shape)}, got {tuple(targets.shape)}")
        if targets.is_floating_point() or targets.is_complex():
            raise TypeError(f"targets must be integer token ids, got dtype {targets.dtype}")
        # Same as llm_lib.losses.cross_entropy (chapter 6), in torch's faster fused form.
        loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T).long())
        return logits, loss

    @classmethod
    def from_huggingface(cls, hf_model_or_state_dict, config=None, dropout=0.0):
        """A GPT with GPT-2's weights from a transformers GPT2LMHeadModel (or its state_dict + config).

        config: the transformers GPT2Config, needed with a bare state_dict (the number of heads
        cannot be read off the weight shapes). GPT-2 stores its linear layers as Conv1D with
        weights of shape (in, out); nn.Linear wants (out, in), so they are transposed.
        """
        if isinstance(hf_model_or_state_dict, dict):
            state_dict = hf_model_or_state_dict
            if config is None:
                raise ValueError("pass config= (the GPT2Config) with a state_dict: n_head is not in the weights")
        else:
            if not hasattr(hf_model_or_state_dict, "state_dict"):
                raise TypeError("from_huggingface takes a transformers GPT2LMHeadModel or its state_dict (with "
                                f"config=), got {type(hf_model_or_state_dict).__name__}; to use a hub name, load "
                                "it with GPT2LMHeadModel.from_pretrained(name) first (that needs the network)")
            state_dict, config = hf_model_or_state_dict.state_dict(), config or hf_model_or_state_dict.config
        if getattr(config, "activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"GPT expects GPT-2's tanh-approximated GELU, got {config.activation_function!r}")
        ours = GPTConfig(vocab_size=config.vocab_size, context_length=config.n_positions, n_layer=config.n_layer,
                         n_head=config.n_head, d_model=config.n_embd, d_ff=getattr(config, "n_inner", None),
                         dropout=dropout, layer_norm_eps=config.layer_norm_epsilon,
                         tie_weights=getattr(config, "tie_word_embeddings", True))
        sd = {k.removeprefix("transformer."): v for k, v in state_dict.items()}
        # Our name -> (GPT-2 name, transpose?)
        names = {"tok_emb.weight": ("wte.weight", False), "pos_emb.weight": ("wpe.weight", False),
                 "norm_f.weight": ("ln_f.weight", False), "norm_f.bias": ("ln_f.bias", False)}
        for i in range(ours.n_layer):
            for mine, theirs, transpose in [("norm1", "ln_1", False), ("norm2", "ln_2", False),
                                            ("attn.qkv", "attn.c_attn", True), ("attn.proj", "attn.c_proj", True),
                                            ("mlp.fc", "mlp.c_fc", True), ("mlp.proj", "mlp.c_proj", True)]:
                names[f"blocks.{i}.{mine}.weight"] = (f"h.{i}.{theirs}.weight", transpose)
                names[f"blocks.{i}.{mine}.bias"] = (f"h.{i}.{theirs}.bias", False)
        if not ours.tie_weights:
            names["lm_head.weight"] = ("lm_head.weight", False)
        missing = sorted(theirs for theirs, _ in names.values() if theirs not in sd)
        if missing:
            raise ValueError(f"state_dict is not a GPT-2 checkpoint: missing {missing[:5]}")
        model = cls(ours)
        params = model.state_dict()
        with torch.no_grad():
            for mine, (theirs, transpose) in names.items():
                w = sd[theirs].t() if transpose else sd[theirs]
                if w.shape != params[mine].shape:
                    raise ValueError(f"{theirs} has shape {tuple(w.shape)}, expected {tuple(params[mine].shape)}")
                params[mine].copy_(w)
        return model


def count_parameters(model_or_config):
    """Number of parameters of a model, or of the GPT a GPTConfig describes (same number).

    >>> count_parameters(GPTConfig())  # GPT-2 small: the "124M" model
    124439808
    """
    if isinstance(model_or_config, nn.Module):
        return sum(p.numel() for p in model_or_config.parameters())  # parameters() lists a tied matrix once
    c = model_or_config
    C, b = c.d_model, int(c.bias)
    norm = C * (1 + b * (c.norm == "layernorm"))  # weight, plus bias for a LayerNorm with bias
    attn = (C * 3 * C + b * 3 * C) + (C * C + b * C)  # qkv + output projection
    n_in = 2 if c.mlp == "swiglu" else 1  # swiglu has two input matrices (gate, up)
    mlp = n_in * (C * c.hidden_dim + b * c.hidden_dim) + (c.hidden_dim * C + b * C)
    embeddings = c.vocab_size * C + (c.context_length * C if c.pos == "learned" else 0)
    head = 0 if c.tie_weights else c.vocab_size * C
    return embeddings + c.n_layer * (2 * norm + attn + mlp) + norm + head


def flops_per_token(config, seq_len=None, training=False):
    """Floating-point operations to process one token in a sequence of seq_len (default: context_length).

    A matrix multiply by an (n_in, n_out) weight costs 2·n_in·n_out per token (a multiply and an
    add), so forward = 2·N_matmul + attention, where
      N_matmul = weights used in matmuls: every Linear, including the output head even when it is
                 tied (embedding lookups, norms, biases and activations do no matmul and are left out:
                 they cost O(C) per token, negligible next to O(C²));
      attention = 4·n_layer·T·C: each token's query is dotted with T keys (2·T·C) and averages T
                 values (2·T·C), counting the masked half like the kernels and FLOP counters do.
    Training ≈ 3× forward: the backward pass needs two matmuls per forward one (gradients with
    respect to the inputs and to the weights). For T << 6·C this is the well-known "6·N per token".
    """
    C, T = config.d_model, seq_len or config.context_length
    n_mlp = 3 if config.mlp == "swiglu" else 2
    n_matmul = config.n_layer * (4 * C * C + n_mlp * C * config.hidden_dim) + C * config.vocab_size
    forward = 2 * n_matmul + 4 * config.n_layer * T * C
    return 3 * forward if training else forward

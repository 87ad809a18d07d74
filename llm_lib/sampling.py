"""Decoding: turn a language model's next-token logits into text, one token at a time.

    >>> out = generate(model, tok.encode("ROMEO.\\n"), 100, temperature=0.8, top_k=50)
    >>> print(tok.decode(out))

Each step takes the logits of the last position, reshapes the distribution (temperature, then top-k,
then top-p, the order transformers applies them in), and either takes the most likely token
(temperature=0: greedy) or draws one. With use_cache=True the prompt runs through the model once and
then only the newest token does, reading the earlier tokens' keys and values from a KVCache per layer
(llm_lib.attention.KVCache) instead of recomputing them: the same tokens come out, much faster.

Longer than the context: the model only ever sees its last context_length tokens (a sliding window).
Past that point every token's position shifts at each step, so cached keys and values (computed at
their old positions) cannot be reused: each step re-runs the window, as use_cache=False does. Chosen
over an error so that long generations just work; chapters can show the slowdown.

Shapes: B batch, T positions, V vocabulary.
"""
from __future__ import annotations

import numbers

import torch

from llm_lib.attention import KVCache

__all__ = ["top_k_filter", "top_p_filter", "sample_next", "generate", "kv_cache_bytes"]


def top_k_filter(logits, k):
    """Keep the k largest logits of each row, set the rest to -inf (ties with the k-th are kept).

    Same result as transformers' TopKLogitsWarper(k). k >= V keeps everything.

    >>> top_k_filter(torch.tensor([1.0, 3.0, 2.0, 0.0]), 2)
    tensor([-inf, 3., 2., -inf])
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"top_k must be an int >= 1 (k=1 is greedy), got {k!r}")
    k = min(int(k), logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1) the k-th largest logit
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits, p):
    """Nucleus filtering: keep the most probable tokens whose probabilities add up to at least p.

    A token is dropped when the tokens less probable than it (itself included) add up to at most 1 - p:
    sorting ascending and taking a cumulative sum finds them all at once. The most probable token is
    always kept, so a tiny p is greedy and p=1.0 keeps everything. Same result as transformers'
    TopPLogitsWarper(p).

    >>> top_p_filter(torch.log(torch.tensor([0.5, 0.3, 0.2])), 0.7)  # 0.5 + 0.3 >= 0.7
    tensor([-0.6931, -1.2040,    -inf])
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be a probability in (0, 1], got {p!r}")
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=False)  # (..., V), least likely first
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (..., V) mass of this token and all below
    remove_sorted = cumulative <= 1 - p
    remove_sorted[..., -1] = False  # keep at least the most likely token
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """One next token per row from logits (B, V): greedy at temperature 0, else a draw. Returns (B,).

    >>> sample_next(torch.tensor([[0.0, 5.0, 1.0]]), temperature=0)
    tensor([1])
    """
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1)
    # Dividing by T < 1 sharpens the distribution toward the top token, T > 1 flattens it.
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)  # (B, V), filtered tokens get exactly 0
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model, ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True,
             generator=None, eos_id=None):
    """Extend `ids` by up to max_new_tokens tokens sampled from `model`; returns prompt + new tokens.

    ids: a list of token ids or a (T,) tensor (one prompt), or a (B, T) tensor (B prompts of one
    length); the result has the same form. temperature=0 is greedy (top_k/top_p then do nothing).
    generator: a torch.Generator for reproducible draws. eos_id: stop a row once it emits this token
    (finished rows are padded with eos_id until every row is done).
    The model runs in eval mode (no dropout) and is put back in the mode it was in.

    >>> generate(model, tok.encode("ROMEO."), 50, temperature=0.8, top_k=50, generator=torch.Generator().manual_seed(0))
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    as_list = isinstance(ids, (list, tuple))
    seq = torch.as_tensor(ids, dtype=torch.long) if as_list else ids
    if not isinstance(seq, torch.Tensor):
        raise TypeError(f"ids must be a list of token ids or a tensor, got {type(ids).__name__}")
    one_row = seq.dim() == 1
    seq = seq[None] if one_row else seq  # (B, T)
    if seq.dim() != 2 or seq.shape[1] == 0:
        raise ValueError(f"ids must be a non-empty (T,) or (B, T) sequence of token ids, got shape {tuple(seq.shape)}")
    device = next(model.parameters()).device
    seq = seq.long().to(device)
    ctx = model.config.context_length
    finished = torch.zeros(seq.shape[0], dtype=torch.bool, device=device)

    was_training = model.training
    model.eval()
    try:
        caches = None
        for _ in range(max_new_tokens):
            if not use_cache:
                logits = model(seq[:, -ctx:])  # (B, T', V): the whole window again
            elif caches is None or len(caches[0]) + 1 > ctx:
                # First step, or no room for one more token: (re)fill fresh caches with the window.
                caches = [KVCache() for _ in model.blocks]
                logits = model(seq[:, -ctx:], kv_cache=caches)
            else:
                logits = model(seq[:, -1:], kv_cache=caches)  # (B, 1, V): only the newest token
            next_id = sample_next(logits[:, -1], temperature, top_k, top_p, generator)  # (B,)
            if eos_id is not None:
                next_id = torch.where(finished, torch.full_like(next_id, eos_id), next_id)
                finished |= next_id == eos_id
            seq = torch.cat([seq, next_id[:, None]], dim=1)
            if eos_id is not None and finished.all():
                break
    finally:
        model.train(was_training)
    seq = seq[0] if one_row else seq
    return seq.tolist() if as_list else seq


def kv_cache_bytes(config, n_tokens, dtype=torch.float32, batch_size=1):
    """Memory a KV cache of n_tokens takes: layers · 2 (K and V) · heads · head_dim · tokens · bytes.

    >>> from llm_lib.model import GPTConfig
    >>> kv_cache_bytes(GPTConfig(), 1024) / 2**20  # GPT-2 small, full context, float32: 72 MiB
    72.0
    """
    head_dim = config.d_model // config.n_head
    bytes_per_element = torch.empty((), dtype=dtype).element_size()
    return config.n_layer * 2 * config.n_head * head_dim * n_tokens * batch_size * bytes_per_element

"""Softmax, cross-entropy and the numbers we report about a language model's loss.

A language model outputs one row of logits (raw scores) per position, one score per
vocabulary entry. Everything in this module turns those scores into probabilities
(`softmax`), into the training loss (`cross_entropy`), and into the two numbers people
quote: `perplexity` (per token) and `bits_per_byte` (per byte of text, comparable
across tokenizers).

Shapes: V = vocabulary size; logits are (..., V), e.g. (N, V) or (B, T, V), and targets
are the matching (...) tensor of integer token ids.
"""

import math
import numbers

import torch

__all__ = ["logsumexp", "softmax", "log_softmax", "cross_entropy", "perplexity", "bits_per_byte"]


def logsumexp(x, dim=-1, keepdim=False):
    """log(sum(exp(x))) along `dim`, without overflow.

    >>> logsumexp(torch.tensor([1000.0, 0.0]))  # naive: log(exp(1000) + 1) = log(inf) = inf
    tensor(1000.)
    """
    # log sum_i exp(x_i) = m + log sum_i exp(x_i - m) for any m. With m = max(x) the largest
    # term is exp(0) = 1: nothing overflows and the sum is at least 1, so the log is finite.
    # m is a constant shift, so it carries no gradient (detach keeps autograd from routing
    # gradient through the argmax, which would cancel out anyway).
    m = x.detach().amax(dim=dim, keepdim=True)  # (..., 1, ...)
    # A slice that is all -inf (every option masked out) has m = -inf and x - m = nan;
    # shift by 0 there instead so the answer is log(0) = -inf, as torch.logsumexp gives.
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    out = m + torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))  # (..., 1, ...)
    return out if keepdim else out.squeeze(dim)


def softmax(x, dim=-1):
    """Turn scores into probabilities along `dim`: exp(x_i) / sum_j exp(x_j).

    >>> softmax(torch.tensor([1.0, 2.0, 3.0]))
    tensor([0.0900, 0.2447, 0.6652])
    """
    # Softmax does not change when every score is shifted by the same amount, so subtract
    # the max: the largest exponent is exp(0) = 1 and no exp can overflow to inf.
    e = torch.exp(x - x.detach().amax(dim=dim, keepdim=True))  # same shape as x, values in (0, 1]
    return e / e.sum(dim=dim, keepdim=True)


def log_softmax(x, dim=-1):
    """log(softmax(x)) computed as x - logsumexp(x): stable even when softmax underflows to 0.

    >>> log_softmax(torch.tensor([0.0, 1000.0]))  # log(softmax) would give log(0) = -inf
    tensor([-1000.,     0.])
    """
    # log(exp(x_i) / sum_j exp(x_j)) = x_i - log sum_j exp(x_j); never take the log of a
    # probability that has already rounded to zero.
    return x - logsumexp(x, dim=dim, keepdim=True)


def _check_logits_and_targets(logits, targets, ignore_index):
    """Raise a clear TypeError/ValueError unless logits (..., V) and targets (...) fit together."""
    if not isinstance(logits, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError(
            f"cross_entropy expects two tensors, logits (..., V) and targets (...); "
            f"got {type(logits).__name__} and {type(targets).__name__}"
        )
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor; got dtype {logits.dtype}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(
            f"targets must hold integer token ids (dtype torch.int64); got dtype {targets.dtype}. "
            f"Convert with targets.long() if they are whole numbers."
        )
    if logits.dim() == 0 or logits.shape[-1] == 0:
        raise ValueError(
            f"logits must have shape (..., V) with a vocabulary dimension V >= 1; "
            f"got shape {tuple(logits.shape)}"
        )
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"shape mismatch: logits {tuple(logits.shape)} need targets of shape "
            f"{tuple(logits.shape[:-1])} (logits.shape[:-1], one id per row of scores); "
            f"got targets {tuple(targets.shape)}"
        )
    vocab_size = logits.shape[-1]
    kept = targets[targets != ignore_index]
    if kept.numel() and (kept.min() < 0 or kept.max() >= vocab_size):
        bad = kept[(kept < 0) | (kept >= vocab_size)]
        raise ValueError(
            f"target ids must be in [0, {vocab_size}) (V = logits.shape[-1] = {vocab_size}) "
            f"or equal ignore_index={ignore_index}; got {bad[:5].tolist()}"
            + (" ..." if bad.numel() > 5 else "")
        )


def cross_entropy(logits, targets, ignore_index=-100, reduction="mean"):
    """Mean negative log-probability of the target ids: the language-modelling loss, in nats.

    logits (..., V) float, targets (...) int64. Positions whose target is `ignore_index`
    (padding, prompt tokens) contribute nothing and are not counted in the mean.
    reduction: "mean" (over kept positions), "sum", or "none" (shape (...), 0 where ignored).
    Equals torch.nn.functional.cross_entropy(logits.flatten(0, -2), targets.flatten(), ...),
    including NaN for "mean" when every target is ignored (0 / 0 positions).

    >>> cross_entropy(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0]))  # -log(e^2 / (e^2 + 2))
    tensor(0.2395)
    """
    _check_logits_and_targets(logits, targets, ignore_index)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")
    targets = targets.long()  # gather needs int64 indices
    keep = targets != ignore_index  # (...) bool
    # Ignored positions may hold any id (e.g. -100); point them at id 0 so gather is valid,
    # then zero their loss below.
    safe_targets = torch.where(keep, targets, torch.zeros_like(targets))  # (...)
    log_probs = log_softmax(logits, dim=-1)  # (..., V)
    # Pick out log p(target) at each position.
    nll = -log_probs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)  # (...)
    # where (not multiply) so an ignored row with inf logits cannot leak nan into the loss.
    nll = torch.where(keep, nll, torch.zeros_like(nll))  # (...)
    if reduction == "none":
        return nll
    if reduction == "sum":
        return nll.sum()
    # Divide by the number of *kept* positions, not nll.numel(): padding must not dilute
    # the average. With nothing kept this is 0 / 0 = nan, exactly as PyTorch reports it.
    return nll.sum() / keep.sum()


def perplexity(logits_or_loss, targets=None, ignore_index=-100):
    """exp(mean cross-entropy): the model is as unsure as a uniform choice among this many tokens.

    Pass either a mean loss in nats (float or 0-d tensor), or logits (..., V) with targets (...).
    Returns a float for a float loss, a 0-d tensor otherwise.

    >>> round(perplexity(math.log(50257)))  # a uniform guess over GPT-2's vocabulary
    50257
    """
    if targets is not None:
        return torch.exp(cross_entropy(logits_or_loss, targets, ignore_index=ignore_index))
    loss = logits_or_loss
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(
                f"perplexity got a tensor of shape {tuple(loss.shape)} and no targets; pass a "
                f"scalar mean loss, or logits (..., V) together with targets (...)"
            )
        return torch.exp(loss.reshape(()))
    if isinstance(loss, numbers.Real) and not isinstance(loss, bool):
        return math.exp(loss)
    raise TypeError(
        f"perplexity expects a mean loss (float or 0-d tensor) or logits with targets; "
        f"got {type(loss).__name__}"
    )


def bits_per_byte(mean_loss, n_tokens, n_bytes):
    """Bits needed per byte of text: (sum of per-token NLL in nats) / (ln 2 * n_bytes).

    mean_loss: mean cross-entropy in nats over the n_tokens predicted tokens (what
               `cross_entropy` returns); float or 0-d tensor.
    n_tokens:  how many tokens that mean is over (the kept targets, not the inputs).
    n_bytes:   UTF-8 bytes of the text those target tokens spell, e.g.
               sum(len(tok.vocab[t]) for t in targets), or len(text.encode("utf-8")).

    mean_loss * n_tokens = -ln p(text) is the model's total code length for the text; ln 2
    converts nats to bits. Per-token loss and perplexity depend on how much text a token
    covers (a tokenizer with longer tokens has a higher per-token loss but fewer tokens),
    while the bytes of the text do not: dividing by bytes lets you compare models that use
    different tokenizers on the same text.

    >>> bits_per_byte(math.log(2), n_tokens=1000, n_bytes=4000)  # 1 bit per token, 4 bytes each
    0.25
    """
    for name, n in (("n_tokens", n_tokens), ("n_bytes", n_bytes)):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
            raise ValueError(f"{name} must be a positive int; got {n!r}")
    if isinstance(mean_loss, torch.Tensor) and mean_loss.numel() != 1:
        raise ValueError(
            f"bits_per_byte expects the mean loss as a scalar; got a tensor of shape "
            f"{tuple(mean_loss.shape)} (take .mean() over the kept positions first)"
        )
    total_nats = mean_loss * n_tokens  # -ln p(text): the whole text's negative log-likelihood
    return total_nats / (math.log(2) * n_bytes)

"""LoRA: fine-tune a frozen linear layer through a trainable low-rank update.

    >>> layer = LoRALinear(nn.Linear(192, 576), r=8, alpha=16)   # W frozen; A (8, 192), B (576, 8) train
    >>> wrapped = add_lora(model, r=8, alpha=16, targets=("qkv", "proj"))
    >>> count_trainable(model)                                   # (trainable, total)

A linear layer computes y = x Wᵀ + b with W of shape (out, in). LoRA (Hu et al., 2021) keeps W frozen
and learns a low-rank change ΔW = (alpha / r) · B A, with A (r, in) and B (out, r):

    y = x Wᵀ + b + (alpha / r) · (x Aᵀ) Bᵀ

It follows peft's conventions (`peft.tuners.lora.Linear`): A starts random (kaiming-uniform, a=√5,
nn.Linear's own init) and B starts at zero, so ΔW = 0 and training starts exactly at the base model;
dropout, when asked for, applies to the input of the LoRA branch only; scaling = alpha / r.
Training updates r·(in + out) numbers per layer instead of in·out, and the optimizer keeps its two
moments for those few numbers only.

merge() folds ΔW into W (one matmul per forward again, no extra cost at inference); unmerge() gives
back the original W exactly: merge keeps a copy of it instead of subtracting ΔW again, which floating
point rounding would make slightly off.

Shapes: N any leading dims, in = in_features, out = out_features.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

__all__ = ["LoRALinear", "add_lora", "lora_parameters", "count_trainable", "merge_lora", "unmerge_lora"]


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update (alpha / r) · B A.

    >>> layer = LoRALinear(nn.Linear(4, 3), r=2, alpha=4)
    >>> torch.equal(layer(torch.ones(1, 4)), layer.base(torch.ones(1, 4)))   # B = 0: same as the base
    True
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"rank r must be an int >= 1, got {r!r}")
        if r > min(base.in_features, base.out_features):
            raise ValueError(f"rank r={r} exceeds min(in_features, out_features) = "
                             f"{min(base.in_features, base.out_features)}: the update would not be low-rank")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
            raise ValueError(f"alpha must be a number > 0, got {alpha!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout is a probability in [0, 1), got {dropout!r}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        weight = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=weight.dtype, device=weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=weight.dtype, device=weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as peft (and nn.Linear) initialise A
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self._original_weight = None

    @property
    def in_features(self):
        return self.base.in_features

    @property
    def out_features(self):
        return self.base.out_features

    def delta_weight(self) -> torch.Tensor:
        """ΔW = (alpha / r) · B A, shape (out, in): what merge() adds to the base weight."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, in) -> (N, out)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input's last dim is {x.shape[-1]}, the layer expects in_features={self.in_features}")
        y = self.base(x)  # x Wᵀ + b
        if self.merged:
            return y  # ΔW is already inside W
        # Two thin matmuls, (N, in) -> (N, r) -> (N, out): ΔW itself is never formed.
        return y + (self.dropout(x) @ self.lora_A.T) @ self.lora_B.T * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ΔW into the base weight (W ← W + ΔW); the forward pass is then a single matmul."""
        if self.merged:
            raise RuntimeError("this LoRALinear is already merged; unmerge() it first")
        self._original_weight = self.base.weight.detach().clone()
        self.base.weight += self.delta_weight()
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the base weight exactly as it was before merge()."""
        if not self.merged:
            raise RuntimeError("this LoRALinear is not merged; nothing to unmerge")
        self.base.weight.copy_(self._original_weight)
        self._original_weight = None
        self.merged = False

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}, alpha={self.alpha}, merged={self.merged}"


def add_lora(model: nn.Module, r: int, alpha: float, targets=("qkv", "proj", "fc"), dropout: float = 0.0,
             freeze: bool = True) -> list[str]:
    """Replace every nn.Linear of `model` whose attribute name is in `targets` by a LoRALinear around it,
    in place; with freeze=True every other parameter is frozen first. Returns the wrapped modules' names.

    The names match the last part of a module's path, as peft's target_modules do: with GPT,
    "qkv" and "proj" are the attention's layers (proj also the MLP's output), "fc" the MLP's input.

    >>> add_lora(model, r=8, alpha=16, targets=("qkv",))
    ['blocks.0.attn.qkv', 'blocks.1.attn.qkv', ...]
    """
    if isinstance(targets, str) or not targets:
        raise ValueError(f"targets must be a non-empty list of layer names, e.g. ('qkv', 'proj'), got {targets!r}")
    if freeze:
        for p in model.parameters():
            p.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                setattr(module, child_name, LoRALinear(child, r, alpha, dropout))
                wrapped.append(f"{name}.{child_name}" if name else child_name)
    if not wrapped:
        raise ValueError(f"no nn.Linear named one of {tuple(targets)} in the model")
    return wrapped


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The A and B matrices of every LoRALinear in the model."""
    return [p for m in model.modules() if isinstance(m, LoRALinear) for p in (m.lora_A, m.lora_B)]


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters); a parameter shared by two modules counts once."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():  # parameters() already yields a shared tensor once
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def merge_lora(model: nn.Module) -> int:
    """merge() every LoRALinear of the model; returns how many."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for m in layers:
        m.merge()
    return len(layers)


def unmerge_lora(model: nn.Module) -> int:
    """unmerge() every LoRALinear of the model; returns how many."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for m in layers:
        m.unmerge()
    return len(layers)

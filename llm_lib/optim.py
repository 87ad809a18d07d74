"""The optimizer, learning-rate schedule and gradient clipping used to pretrain the course model.

- `AdamW`: Adam with decoupled weight decay, written out step by step; equals
  torch.optim.AdamW and saves/loads through the ordinary Optimizer state_dict.
- `cosine_lr`: linear warmup, then cosine decay to a floor (the schedule of GPT-3, Llama, CS336).
- `clip_grad_norm_`: rescale all gradients together when their global L2 norm is too large.
"""

import math
import numbers

import torch

__all__ = ["adamw_update", "AdamW", "cosine_lr", "clip_grad_norm_"]


@torch.no_grad()
def adamw_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    """One AdamW update of one tensor, in place. `step` counts from 1 (this update included).

    >>> p, m, v = torch.ones(2), torch.zeros(2), torch.zeros(2)
    >>> adamw_update(p, torch.ones(2), m, v, step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)
    >>> p  # Adam's first step moves every weight by about lr, whatever the gradient's size
    tensor([0.9000, 0.9000])
    """
    # Decoupled weight decay (Loshchilov & Hutter): shrink the weights directly, outside the
    # adaptive update, so every weight decays at the same rate lr * weight_decay whatever its
    # gradient history. (Adding wd * param to the gradient, "L2", would be divided by
    # sqrt(v) and decay rarely-updated weights more.)
    param.mul_(1 - lr * weight_decay)
    # Running averages of the gradient (m, direction) and its square (v, per-weight scale).
    exp_avg.lerp_(grad, 1 - beta1)  # m = beta1 * m + (1 - beta1) * g
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v = beta2 * v + (1 - beta2) * g^2
    # m and v start at 0, so early averages are biased towards 0; dividing by
    # (1 - beta^step) undoes that bias (it tends to 1 as step grows).
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    # update = lr * m_hat / (sqrt(v_hat) + eps). eps goes in after the bias correction and
    # the order of operations (even ** 0.5 rather than math.sqrt) follows torch.optim.AdamW,
    # so the two agree bit for bit.
    denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay; same defaults and results as torch.optim.AdamW.

    Per-parameter state: "step" (int), "exp_avg" (m) and "exp_avg_sq" (v), the same keys
    torch.optim.AdamW uses, so state_dict()/load_state_dict() come from the Optimizer base
    class and checkpoints move between the two.

    >>> opt = AdamW(torch.nn.Linear(4, 2).parameters(), lr=3e-4, weight_decay=0.1)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        if not 0.0 <= lr:
            raise ValueError(f"lr must be >= 0; got {lr}")
        if not isinstance(betas, (tuple, list)) or len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), e.g. (0.9, 0.999); got {betas}")
        if not 0.0 <= eps:
            raise ValueError(f"eps must be >= 0; got {eps}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"weight_decay must be >= 0; got {weight_decay}")
        # The base class turns params into param_groups, each filled in with these defaults
        # (so a group can override e.g. weight_decay: no decay on biases and norms).
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """Update every parameter that has a gradient; returns closure() if one is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:  # unused this step (e.g. frozen): no update, no state
                    continue
                if p.grad.is_sparse:
                    raise TypeError("AdamW does not support sparse gradients")
                state = self.state[p]
                if not state:  # first update of this parameter: moments start at zero
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                # int() also accepts the 0-d tensor torch.optim.AdamW stores, so its
                # checkpoints load here.
                state["step"] = int(state["step"]) + 1
                adamw_update(
                    p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"],
                    group["lr"], beta1, beta2, group["eps"], group["weight_decay"],
                )
        return loss


def cosine_lr(it, max_lr, min_lr, warmup_iters, cosine_cycle_iters):
    """Learning rate at iteration `it`: linear warmup, cosine decay, then a constant floor.

      it < warmup_iters:                         max_lr * it / warmup_iters   (0 at it = 0)
      warmup_iters <= it <= cosine_cycle_iters:  min_lr + (1 + cos(pi * progress)) / 2 * (max_lr - min_lr),
                                                 progress = (it - warmup_iters) / (cosine_cycle_iters - warmup_iters)
      it > cosine_cycle_iters:                   min_lr

    >>> [round(cosine_lr(it, 1.0, 0.1, 2, 6), 3) for it in range(8)]
    [0.0, 0.5, 1.0, 0.868, 0.55, 0.232, 0.1, 0.1]
    """
    for name, n in (("it", it), ("warmup_iters", warmup_iters), ("cosine_cycle_iters", cosine_cycle_iters)):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"{name} must be an int >= 0; got {n!r}")
    if cosine_cycle_iters <= warmup_iters:
        raise ValueError(
            f"cosine_cycle_iters ({cosine_cycle_iters}) must be greater than warmup_iters "
            f"({warmup_iters}): it is the iteration where the decay ends, counted from 0, not its length"
        )
    if not 0.0 <= min_lr <= max_lr:
        raise ValueError(f"need 0 <= min_lr <= max_lr; got min_lr={min_lr}, max_lr={max_lr}")
    # Warmup: Adam's v estimate is poor in the first steps, so small steps avoid early blow-ups.
    if it < warmup_iters:
        return max_lr * it / warmup_iters
    # After the cycle: keep training at the floor instead of restarting the cosine.
    if it > cosine_cycle_iters:
        return min_lr
    # Cosine decay: slow at first, fastest mid-way, gentle landing on min_lr.
    progress = (it - warmup_iters) / (cosine_cycle_iters - warmup_iters)  # 0 -> 1
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


@torch.no_grad()
def clip_grad_norm_(params, max_norm, eps=1e-6):
    """Scale all gradients in place so their global L2 norm is at most max_norm; return that norm.

    Same result as torch.nn.utils.clip_grad_norm_(params, max_norm). Parameters without a
    gradient are skipped. The returned norm is the one measured *before* clipping.

    >>> p = torch.nn.Parameter(torch.zeros(2)); p.grad = torch.tensor([3.0, 4.0])
    >>> clip_grad_norm_([p], max_norm=1.0), p.grad
    (tensor(5.), tensor([0.6000, 0.8000]))
    """
    if isinstance(params, torch.Tensor):
        params = [params]
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real) or not max_norm >= 0:
        raise ValueError(f"max_norm must be a number >= 0; got {max_norm!r}")
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    # One norm over *all* gradients as if they were one long vector:
    # sqrt(sum_i ||g_i||^2). Clipping each tensor separately would change the direction
    # of the overall update; scaling everything by one factor keeps it.
    device = grads[0].device
    total_norm = torch.stack([g.pow(2).sum().to(device) for g in grads]).sum().sqrt()  # ()
    # Factor <= 1: shrink only when the norm is above max_norm (then the new norm is
    # max_norm); eps avoids dividing by zero when every gradient is zero.
    clip_coef = torch.clamp(max_norm / (total_norm + eps), max=1.0)
    for g in grads:
        g.mul_(clip_coef.to(g.device, g.dtype))  # multiplying by 1.0 is a no-op below max_norm
    return total_norm

"""GRPO: reinforcement learning with verifiable rewards, a group of answers per prompt.

    >>> history = train_grpo(policy, tok, train_tasks, GRPOConfig(steps=40), eval_tasks=test_tasks)

Group Relative Policy Optimization (DeepSeekMath, Shao et al. 2024) trains a language model on prompts
whose answers a program can check. For each prompt it samples a *group* of G completions from the
current policy, scores each with the checker (1 if the answer is right, 0 if not, plus an optional small
bonus for the expected format), and turns the scores into advantages by comparing each completion with
its own group: above the group's mean is good, below it is bad. PPO would get that baseline from a
learned value network (a critic as large as the policy); GRPO gets it for free from the group, at the
price of sampling G answers per prompt. The policy then climbs the PPO-style clipped objective, with a
KL penalty that keeps it near the reference model it started from (the SFT model).

Pieces, each usable on its own:
    group_normalized_advantages  rewards (N·G,) -> advantages (N·G,), (r - mean) / (std + eps) per group
    k3_kl                        per-token estimate of KL(policy || reference), always >= 0
    token_logprobs               log p(token t+1 | tokens <= t) of a batch under a model
    grpo_loss                    clipped surrogate + beta·KL, averaged over completion tokens
    sample_group                 G completions of one chat prompt, with the mask of their tokens
    accuracy                     exact-match accuracy of a model on tasks (greedy by default)
    train_grpo                   the loop: sample, reward, normalise, update; history for plots

Shapes: N prompts per step, G completions per prompt (the group), B = N·G rows, T token positions.
"""
from __future__ import annotations

import copy
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llm_lib.optim import AdamW, clip_grad_norm_
from llm_lib.sampling import generate

__all__ = ["group_normalized_advantages", "k3_kl", "token_logprobs", "grpo_loss", "completion_mask",
           "default_reward", "sample_group", "accuracy", "GRPOConfig", "train_grpo", "plot_history", "build_grpo_model"]

END = "<|end|>"


def _as_float_tensor(x, name):
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bool or not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
        return x.float() if not x.is_floating_point() else x
    if isinstance(x, (list, tuple)):
        try:
            return torch.as_tensor(x, dtype=torch.float32)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be a tensor or a flat list of numbers: {e}") from None
    raise TypeError(f"{name} must be a tensor or a list of numbers, got {type(x).__name__}")


def group_normalized_advantages(rewards, group_size, eps=1e-4, scale_by_std=True):
    """Each completion's reward minus its group's mean, divided by the group's std (+ eps).

    rewards: (N·G,) with the G completions of each prompt next to each other (the order sample_group
    gives), or (N, G). Returns advantages of the same shape, each group summing to 0.

    std: the sample standard deviation (Bessel's n-1, torch.std's default and TRL's choice). A group
    where every answer got the same reward (all right or all wrong) has std 0 and advantages exactly 0:
    it teaches nothing, which is why tasks the model solves sometimes are the useful ones. eps keeps
    the division finite. scale_by_std=False is Dr. GRPO (Liu et al. 2025): dividing by the std gives
    the groups with nearly uniform rewards (almost always right, or almost always wrong) the largest
    advantages, a bias towards too-easy and too-hard questions; the variant only subtracts the mean.

    >>> group_normalized_advantages(torch.tensor([1., 0., 0., 0.]), 4)
    tensor([ 1.5000, -0.5000, -0.5000, -0.5000])
    """
    r = _as_float_tensor(rewards, "rewards")
    if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral) or group_size < 2:
        raise ValueError(f"group_size must be an int >= 2 (a group of one has no baseline), got {group_size!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or eps < 0:
        raise ValueError(f"eps must be a number >= 0, got {eps!r}")
    if r.dim() == 2:
        if r.shape[1] != group_size:
            raise ValueError(f"rewards of shape {tuple(r.shape)} should be (N, group_size={group_size})")
    elif r.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N·G,) or 2-D (N, G), got shape {tuple(r.shape)}")
    if r.numel() == 0 or r.numel() % group_size:
        raise ValueError(f"{r.numel()} rewards do not split into groups of {group_size}; "
                         f"pass all G rewards of every prompt")
    if not torch.isfinite(r).all():
        raise ValueError("rewards contain nan or inf; a checker must return finite numbers")
    groups = r.reshape(-1, group_size)  # (N, G)
    advantages = groups - groups.mean(dim=1, keepdim=True)
    if scale_by_std:
        advantages = advantages / (groups.std(dim=1, keepdim=True) + eps)
    return advantages.reshape(r.shape)


def k3_kl(logprobs, ref_logprobs):
    """Schulman's k3 estimate of KL(policy || reference) at each sampled token: e^d - d - 1, d = ref - logp.

    Tokens drawn from the policy make its mean an unbiased estimate of the KL, like the naive
    k1 = logp - ref, but every term is >= 0 (x - 1 >= log x), so it has a far smaller variance and
    never rewards the policy for a "negative KL". It is 0 exactly where the two models agree.

    >>> k3_kl(torch.tensor([-1.0]), torch.tensor([-1.0]))
    tensor([0.])
    """
    if not isinstance(logprobs, torch.Tensor) or not isinstance(ref_logprobs, torch.Tensor):
        raise TypeError("logprobs and ref_logprobs must be tensors of log-probabilities")
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(f"logprobs {tuple(logprobs.shape)} and ref_logprobs {tuple(ref_logprobs.shape)} "
                         f"must have the same shape: one value per sampled token")
    d = ref_logprobs - logprobs  # log(p_ref / p_policy)
    return torch.exp(d) - d - 1


def token_logprobs(model, ids):
    """log p(ids[:, t+1] | ids[:, :t+1]) under `model`: ids (B, T) -> (B, T-1), with gradients.

    >>> token_logprobs(model, ids).shape  # ids (4, 20)
    torch.Size([4, 19])
    """
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[1] < 2:
        raise ValueError(f"ids must be a (B, T) tensor of token ids with T >= 2, got "
                         f"{tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__}")
    logits = model(ids[:, :-1])  # (B, T-1, V): the prediction for each next token
    logp = F.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)


def grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps=0.2, beta=0.04,
              loss_type="grpo"):
    """The GRPO objective, negated to be minimised. Returns (loss, stats).

    Per completion token (all (B, T); advantages (B,), one per completion, shared by its tokens):
        ratio = exp(logprobs - old_logprobs)                    policy now / policy that sampled
        surrogate = min(ratio·A, clip(ratio, 1-eps, 1+eps)·A)    PPO's pessimistic bound
        per_token = -(surrogate - beta·k3_kl(logprobs, ref_logprobs))
    mask (B, T): 1 on the completion's tokens, 0 on prompt and padding.
    loss_type "grpo": mean over each completion's tokens, then over completions (DeepSeekMath);
    "dr_grpo": sum over all tokens / (B·T), a constant, so long and short completions weigh the same
    per token (Dr. GRPO: the per-completion mean favours long wrong answers and short right ones).
    stats: mean k3 KL, fraction of tokens where the clip was active, mean ratio (plain floats).

    The clip only bites when the batch is reused for several updates (old_logprobs then lag behind);
    on the first update ratio = 1 and the gradient is the plain policy gradient A·∇log p.
    """
    tensors = {"logprobs": logprobs, "old_logprobs": old_logprobs, "ref_logprobs": ref_logprobs, "mask": mask}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.shape != logprobs.shape or t.dim() != 2:
            raise ValueError(f"{name} has shape {tuple(t.shape)}; logprobs, old_logprobs, ref_logprobs and mask "
                             f"must all be (B, T), got logprobs {tuple(logprobs.shape)}")
    advantages = _as_float_tensor(advantages, "advantages")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must be (B,) = ({logprobs.shape[0]},), one per completion, "
                         f"got {tuple(advantages.shape)}")
    if isinstance(clip_eps, bool) or not isinstance(clip_eps, numbers.Real) or not 0 < clip_eps < 1:
        raise ValueError(f"clip_eps must be in (0, 1), got {clip_eps!r}")
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or beta < 0:
        raise ValueError(f"beta must be a number >= 0, got {beta!r}")
    if loss_type not in ("grpo", "dr_grpo"):
        raise ValueError(f"loss_type must be 'grpo' or 'dr_grpo', got {loss_type!r}")
    mask = mask.to(logprobs.dtype)
    A = advantages.to(logprobs.dtype)[:, None]  # (B, 1): every token of a completion shares its advantage
    ratio = torch.exp(logprobs - old_logprobs.detach())  # (B, T)
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
    surrogate = torch.minimum(ratio * A, clipped * A)
    kl = k3_kl(logprobs, ref_logprobs.detach())
    per_token = -(surrogate - beta * kl)  # (B, T)
    if loss_type == "grpo":
        per_completion = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        loss = per_completion.mean()
    else:
        loss = (per_token * mask).sum() / mask.numel()
    n = mask.sum().clamp(min=1)
    with torch.no_grad():
        stats = {"kl": ((kl * mask).sum() / n).item(),
                 "clip_fraction": ((((ratio - clipped).abs() > 0).to(mask.dtype) * mask).sum() / n).item(),
                 "ratio": ((ratio * mask).sum() / n).item()}
    return loss, stats


def completion_mask(new_ids, end_id):
    """1 on each completion's tokens up to and including its first `end_id`, 0 after: (B, L) -> (B, L).

    generate pads a finished row with end_id; those copies are not part of the answer.

    >>> completion_mask(torch.tensor([[5, 9, 9], [5, 6, 7]]), end_id=9)
    tensor([[1., 1., 0.],
            [1., 1., 1.]])
    """
    is_end = (new_ids == end_id).long()
    ends_before = torch.cumsum(is_end, dim=1) - is_end  # (B, L): ends strictly before position t
    return (ends_before == 0).float()


def default_reward(task, response, finished, check, format_bonus=0.1):
    """1 for a correct answer (check(task, response)), plus format_bonus when the reply ended with <|end|>.

    A small format reward (DeepSeek-R1 used one for its <think> tags) helps the model keep the shape
    the checker parses, but must stay well below the correctness reward or the model learns to be
    tidy and wrong.
    """
    return float(bool(check(task, response))) + (format_bonus if finished else 0.0)


def sample_group(model, tok, prompt, group_size, max_new_tokens=16, temperature=1.0, top_k=None,
                 generator=None):
    """G completions of one chat prompt (llm_lib.sft.format_chat), sampled as one batch.

    Returns (ids (G, P + L), mask (G, L) over the L new tokens, texts [G replies, cut at <|end|>],
    finished [G bools: the reply emitted <|end|>]). All rows share the prompt, so no padding is needed
    on the left, and generate pads finished rows on the right with <|end|>.
    """
    from llm_lib.sft import format_chat

    end_id = tok.special_tokens[END]
    prompt_ids = torch.tensor(tok.encode(format_chat(prompt)), dtype=torch.long)  # (P,)
    batch = prompt_ids[None].repeat(group_size, 1)  # (G, P)
    ids = generate(model, batch, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator,
                   eos_id=end_id)  # (G, P + L), L <= max_new_tokens
    new = ids[:, len(prompt_ids):]  # (G, L)
    mask = completion_mask(new, end_id)
    texts, finished = [], []
    for row in new.tolist():
        done = end_id in row
        texts.append(tok.decode(row[:row.index(end_id)] if done else row))
        finished.append(done)
    return ids, mask, texts, finished


@torch.no_grad()
def accuracy(model, tok, tasks, check=None, max_new_tokens=16, temperature=0.0, generator=None,
             return_replies=False):
    """Fraction of tasks whose reply passes check(task, reply); greedy (temperature 0) by default.

    Prompts of the same token length run as one batch (no padding needed).
    """
    from llm_lib.sft import format_chat

    if check is None:
        from llm_lib.sft import is_correct as check
    if not tasks:
        raise ValueError("accuracy needs at least one task")
    end_id = tok.special_tokens[END]
    encoded = [tok.encode(format_chat(t.prompt)) for t in tasks]
    replies = [None] * len(tasks)
    by_length = {}
    for i, ids in enumerate(encoded):
        by_length.setdefault(len(ids), []).append(i)
    for idxs in by_length.values():
        batch = torch.tensor([encoded[i] for i in idxs], dtype=torch.long)
        out = generate(model, batch, max_new_tokens, temperature=temperature, generator=generator, eos_id=end_id)
        for i, row in zip(idxs, out[:, batch.shape[1]:].tolist()):
            replies[i] = tok.decode(row[:row.index(end_id)] if end_id in row else row)
    correct = [bool(check(t, r)) for t, r in zip(tasks, replies)]
    acc = sum(correct) / len(tasks)
    return (acc, replies) if return_replies else acc


@dataclass
class GRPOConfig:
    """Hyperparameters of train_grpo (defaults sized for the course's 2.6M-parameter model on a CPU)."""

    steps: int = 40               # policy updates (each on a fresh batch of rollouts)
    prompts_per_step: int = 8     # N
    group_size: int = 8           # G completions per prompt
    max_new_tokens: int = 8
    temperature: float = 1.0      # sampling temperature of the rollouts (exploration)
    lr: float = 2e-5
    clip_eps: float = 0.2
    beta: float = 0.04            # weight of the KL penalty to the reference model
    epochs_per_batch: int = 1     # updates on each batch of rollouts (mu in DeepSeekMath); > 1 makes the clip bite
    format_bonus: float = 0.1
    scale_by_std: bool = True     # False: Dr. GRPO's advantages (mean only)
    loss_type: str = "grpo"
    grad_clip: float = 1.0
    eval_every: int = 10          # held-out accuracy every k steps (0: never)
    seed: int = 0


def _check_config(c):
    for name in ("steps", "prompts_per_step", "group_size", "max_new_tokens", "epochs_per_batch"):
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"GRPOConfig.{name} must be a positive int, got {v!r}")
    if c.group_size < 2:
        raise ValueError(f"GRPOConfig.group_size must be >= 2 (a group of one has no baseline), got {c.group_size}")
    if not c.lr > 0:
        raise ValueError(f"GRPOConfig.lr must be > 0, got {c.lr}")


def train_grpo(model, tok, tasks, config=None, ref_model=None, check=None, reward_fn=None, eval_tasks=None,
               progress=True):
    """Train `model` in place with GRPO on `tasks` (objects with .prompt and .answer); returns history.

    ref_model: the frozen reference for the KL penalty (default: a copy of `model` before training).
    check(task, reply) -> bool: the verifier (default llm_lib.sft.is_correct).
    reward_fn(task, reply, finished) -> float (default: default_reward with config.format_bonus).
    eval_tasks: held-out tasks; greedy accuracy on them is logged every config.eval_every steps.
    Deterministic: step k draws its prompts and samples from generators seeded by (config.seed, k).

    history: per step "step", "reward", "accuracy" (rollouts judged correct), "kl", "loss",
    "clip_fraction", "solved_groups"/"failed_groups" (groups with all answers right/wrong: no signal),
    and "eval_step", "eval_accuracy".
    """
    config = config or GRPOConfig()
    _check_config(config)
    if not tasks:
        raise ValueError("train_grpo needs at least one task")
    if check is None:
        from llm_lib.sft import is_correct as check
    if reward_fn is None:
        def reward_fn(task, reply, finished):
            return default_reward(task, reply, finished, check, config.format_bonus)
    if ref_model is None:
        ref_model = copy.deepcopy(model)
    ref_model.eval()
    for p in ref_model.parameters():
        p.requires_grad_(False)
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr, betas=(0.9, 0.99),
                      weight_decay=0.0)
    G = config.group_size
    history = {k: [] for k in ("step", "reward", "accuracy", "kl", "loss", "clip_fraction", "solved_groups",
                               "failed_groups", "eval_step", "eval_accuracy")}

    def run_eval(step):
        history["eval_step"].append(step)
        history["eval_accuracy"].append(accuracy(model, tok, eval_tasks, check, config.max_new_tokens))

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.steps, desc="grpo", unit="step", dynamic_ncols=True)
    for step in range(config.steps):
        if eval_tasks and config.eval_every and step % config.eval_every == 0:
            run_eval(step)
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        picks = torch.randint(len(tasks), (config.prompts_per_step,), generator=gen).tolist()
        # 1. Rollouts: G answers per prompt from the current policy, no gradients.
        groups, rewards, correct = [], [], []
        model.eval()
        for i in picks:
            ids, mask, texts, finished = sample_group(model, tok, tasks[i].prompt, G, config.max_new_tokens,
                                                      config.temperature, generator=gen)
            groups.append((ids, mask))
            for text, done in zip(texts, finished):
                rewards.append(reward_fn(tasks[i], text, done))
                correct.append(bool(check(tasks[i], text)))
        rewards_t = torch.tensor(rewards)  # (N·G,)
        # 2. Advantages: each answer against its own group.
        adv = group_normalized_advantages(rewards_t, G, scale_by_std=config.scale_by_std).reshape(-1, G)  # (N, G)
        # 3. Log-probabilities of the sampled tokens under the sampling policy and the reference.
        with torch.no_grad():
            old = [token_logprobs(model, ids)[:, -mask.shape[1]:] for ids, mask in groups]
            ref = [token_logprobs(ref_model, ids)[:, -mask.shape[1]:] for ids, mask in groups]
        # 4. Update: one group per forward pass (the rows share a prompt, so they need no padding).
        model.train()
        stats = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0}
        for _ in range(config.epochs_per_batch):
            optimizer.zero_grad(set_to_none=True)
            for (ids, mask), o, r, a in zip(groups, old, ref, adv):
                logp = token_logprobs(model, ids)[:, -mask.shape[1]:]  # (G, L) the completion's tokens
                loss, s = grpo_loss(logp, o, r, a, mask, config.clip_eps, config.beta, config.loss_type)
                (loss / len(groups)).backward()  # the batch loss is the mean over its prompts
                stats["loss"] += loss.item() / len(groups) / config.epochs_per_batch
                stats["kl"] += s["kl"] / len(groups) / config.epochs_per_batch
                stats["clip_fraction"] += s["clip_fraction"] / len(groups) / config.epochs_per_batch
            if config.grad_clip:
                clip_grad_norm_([p for p in model.parameters() if p.grad is not None], config.grad_clip)
            optimizer.step()
        model.eval()
        per_group = torch.tensor(correct, dtype=torch.float).reshape(-1, G).mean(dim=1)  # (N,)
        history["step"].append(step)
        history["reward"].append(rewards_t.mean().item())
        history["accuracy"].append(sum(correct) / len(correct))
        history["solved_groups"].append(int((per_group == 1).sum()))
        history["failed_groups"].append(int((per_group == 0).sum()))
        for key, value in stats.items():
            history[key].append(value)
        if bar is not None:
            bar.set_postfix({"reward": f"{history['reward'][-1]:.2f}", "acc": f"{history['accuracy'][-1]:.2f}",
                             "kl": f"{history['kl'][-1]:.3f}"}, refresh=False)
            bar.update(1)
    if eval_tasks and config.eval_every:
        run_eval(config.steps)
    if bar is not None:
        bar.close()
    model.eval()
    return history


# --- the course GRPO model (pipeline stage "grpo") ------------------------------------------------

def plot_history(history, path=None, title="GRPO"):
    """A matplotlib Figure: rollout reward and accuracy per step (thin) with a running mean, held-out
    greedy accuracy at its evaluation steps, and the KL to the reference. No pyplot: safe in notebooks."""
    from matplotlib.figure import Figure

    def running_mean(xs, k=5):
        return [sum(xs[max(0, i - k + 1):i + 1]) / len(xs[max(0, i - k + 1):i + 1]) for i in range(len(xs))]

    fig = Figure(figsize=(10, 3.6), dpi=110)
    left, right = fig.subplots(1, 2)
    for key, colour, label in (("reward", "#0072b2", "mean reward of the rollouts"),
                               ("accuracy", "#009e73", "rollouts correct (sampled, T=1)")):
        left.plot(history["step"], history[key], color=colour, alpha=0.25, lw=1)
        left.plot(history["step"], running_mean(history[key]), color=colour, lw=2, label=label)
    if history["eval_step"]:
        left.plot(history["eval_step"], history["eval_accuracy"], "o-", color="#d55e00", ms=4,
                  label="held-out accuracy (greedy)")
    left.set_xlabel("GRPO step")
    left.set_ylim(0, max(1.15, max(history["reward"], default=0) + 0.05))
    left.grid(alpha=0.3)
    left.legend(fontsize=8, loc="lower right")
    left.set_title(f"{title}: reward and accuracy")
    right.plot(history["step"], history["kl"], color="#cc79a7", lw=1.5)
    right.set_xlabel("GRPO step")
    right.set_ylabel("mean k3 KL to the SFT model (nats / token)")
    right.grid(alpha=0.3)
    right.set_title("How far the policy moved")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def build_grpo_model(out, recipe, tok, sft_model):
    """GRPO from the SFT model per `recipe` (pipeline.RECIPES["grpo"]) into folder `out`.

    Trains on make_tasks(..., split="train") of the recipe's task kinds and measures, before and after,
    on distinct prompts of the test split: greedy accuracy and the mean accuracy of `n_samples` sampled
    replies per prompt (temperature 1, seeded). Writes model.safetensors, config.json, history.json,
    eval.json (held-out replies before/after), grpo.png; returns stats for the manifest, with the
    per-step reward and accuracy.
    """
    import time
    from dataclasses import asdict
    from pathlib import Path

    from llm_lib.sft import make_tasks
    from llm_lib.train import save_stage_artifact

    out = Path(out)
    t = recipe["tasks"]
    kinds = tuple(t["kinds"])
    train_tasks = make_tasks(t["n_train"], seed=recipe["seed"], split="train", kinds=kinds)
    test_tasks = list(dict.fromkeys(make_tasks(t["n_test"], seed=recipe["seed"], split="test", kinds=kinds)))
    seen_tasks = list(dict.fromkeys(train_tasks))  # the distinct training prompts, for the in-distribution figure
    config = GRPOConfig(**recipe["grpo"], seed=recipe["seed"])

    def measure(model):
        from llm_lib.sft import is_correct

        greedy, replies = accuracy(model, tok, test_tasks, max_new_tokens=config.max_new_tokens, return_replies=True)
        gen = torch.Generator().manual_seed(recipe["seed"])
        sampled = [accuracy(model, tok, test_tasks, max_new_tokens=config.max_new_tokens, temperature=1.0,
                            generator=gen) for _ in range(t["n_samples"])]
        by_kind = {}
        for kind in kinds:
            ok = [is_correct(task, r) for task, r in zip(test_tasks, replies) if task.kind == kind]
            by_kind[kind] = round(sum(ok) / max(len(ok), 1), 4)
        train_greedy = accuracy(model, tok, seen_tasks, max_new_tokens=config.max_new_tokens)
        return {"greedy_accuracy": round(greedy, 4), "sampled_accuracy": round(sum(sampled) / len(sampled), 4),
                "greedy_accuracy_by_kind": by_kind, "train_prompts_greedy_accuracy": round(train_greedy, 4)}, replies

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: one thread is as fast, and the result cannot depend on the core count
    try:
        torch.manual_seed(recipe["seed"])
        before, replies_before = measure(sft_model)
        model = copy.deepcopy(sft_model)
        start = time.perf_counter()
        history = train_grpo(model, tok, train_tasks, config, ref_model=sft_model, eval_tasks=test_tasks)
        train_seconds = time.perf_counter() - start
        after, replies_after = measure(model)
    finally:
        torch.set_num_threads(threads)

    save_stage_artifact(out, model, history, {
        "tasks": [asdict(task) for task in test_tasks], "sft": replies_before, "grpo": replies_after})
    plot_history(history, out / "grpo.png")
    return {"train_tasks": len(train_tasks), "train_prompts": len(seen_tasks), "test_tasks": len(test_tasks),
            "kinds": list(kinds),
            "steps": config.steps, "rollouts": config.steps * config.prompts_per_step * config.group_size,
            "n_samples": t["n_samples"], "before": before, "after": after,
            "per_step": {"reward": [round(x, 4) for x in history["reward"]],
                         "accuracy": [round(x, 4) for x in history["accuracy"]],
                         "kl": [round(x, 5) for x in history["kl"]]},
            "eval": {"step": history["eval_step"], "accuracy": [round(x, 4) for x in history["eval_accuracy"]]},
            "train_seconds": round(train_seconds, 1), "threads": 1}

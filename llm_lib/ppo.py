"""PPO for language models: the second half of RLHF (chapter 10).

    >>> history = ppo_train(policy, ref, reward_model, value_model, tok, prompts, PPOConfig(steps=60))

One PPO step:
  1. rollout: sample a reply to each prompt from the policy (`generate_responses`);
  2. score: the reward model rates each whole reply; every reply token also pays a KL penalty
     kl_coef · (log pi(token) - log pi_ref(token)) for drifting from the frozen reference (the SFT
     model), so the total reward is "be preferred, but stay a language model" (`per_token_rewards`);
  3. credit: generalised advantage estimation turns per-token rewards and the value model's
     predictions into an advantage per token (`gae`);
  4. update: a few epochs of the clipped surrogate objective (`ppo_clip_loss`) for the policy and a
     squared error (`value_loss`) for the value model, on the same rollouts.

Tensor layout: a batch of prompt + reply sequences, right-padded, is fed as inputs = seq[:, :-1] and
targets = seq[:, 1:] (as in pretraining), so position t's log-probability, value and reward all belong
to the token targets[:, t]. `mask` (B, T) is 1 on reply tokens, 0 on prompt and padding.
Shapes: B batch, T positions.
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["token_logprobs", "kl_penalty", "per_token_rewards", "gae", "whiten", "ppo_clip_loss", "value_loss",
           "generate_responses", "Rollout", "make_rollout", "PPOConfig", "ppo_train", "masked_mean",
           "value_model_from", "build_ppo_model"]


def _check_same_shape(**tensors):
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shapes must match, got {shapes}")


def masked_mean(x, mask=None):
    """Mean of x over the positions where mask is nonzero (all of x without a mask).

    >>> masked_mean(torch.tensor([1.0, 2.0, 9.0]), torch.tensor([1, 1, 0]))
    tensor(1.5000)
    """
    if mask is None:
        return x.mean()
    _check_same_shape(x=x, mask=mask)
    mask = mask.to(x.dtype)
    if mask.sum() == 0:
        raise ValueError("mask selects no position: nothing to average (an empty reply everywhere?)")
    return (x * mask).sum() / mask.sum()


def token_logprobs(logits, targets):
    """log p(targets[b, t]) under logits[b, t]: (B, T, V), (B, T) -> (B, T).

    Targets equal to -100 (prompt, padding) get log-probability 0, so sums over a row count only the
    real targets.

    >>> token_logprobs(torch.zeros(1, 2, 4), torch.tensor([[3, -100]]))   # uniform over 4: ln 1/4
    tensor([[-1.3863,  0.0000]])
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"logits must be (B, T, V) and targets (B, T), got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    if targets.is_floating_point():
        raise TypeError(f"targets must be integer token ids, got dtype {targets.dtype}")
    keep = targets != -100
    V = logits.shape[-1]
    if ((targets[keep] < 0) | (targets[keep] >= V)).any():
        raise ValueError(f"targets must be token ids in [0, {V}) or -100 (ignored)")
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # half precision loses too much in a log-softmax over the vocabulary
    logp = F.log_softmax(logits, dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return torch.where(keep, logp, torch.zeros_like(logp))


def kl_penalty(logp, ref_logp, kind: str = "k1"):
    """Per-token estimate of KL(pi || pi_ref) from the log-probabilities of the SAMPLED tokens.

    kind "k1": logp - ref_logp (unbiased; negative on some tokens, its mean over samples is the KL);
    kind "k3": (r - 1) - log r with r = pi_ref / pi (unbiased too, and never negative: Schulman's
    low-variance estimator, also used by GRPO). Both are 0 when the two models agree.

    >>> kl_penalty(torch.tensor([-1.0]), torch.tensor([-2.0]))
    tensor([1.])
    """
    _check_same_shape(logp=logp, ref_logp=ref_logp)
    log_ratio = logp - ref_logp
    if kind == "k1":
        return log_ratio
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio  # (r - 1) - log r, r = exp(-log_ratio)
    raise ValueError(f"kind must be 'k1' or 'k3', got {kind!r}")


def per_token_rewards(scores, logp, ref_logp, mask, kl_coef: float):
    """The reward PPO maximises, per reply token: -kl_coef · KL estimate on every reply token, plus the
    reward model's score of the whole reply on its LAST token. (B,), (B, T) x 3 -> (B, T).

    >>> per_token_rewards(torch.tensor([2.0]), torch.tensor([[0., -1., -1., 0.]]),
    ...                   torch.tensor([[0., -2., -1., 0.]]), torch.tensor([[0, 1, 1, 0]]), 0.1)
    tensor([[ 0.0000, -0.1000,  2.0000,  0.0000]])
    """
    _check_same_shape(logp=logp, ref_logp=ref_logp, mask=mask)
    if scores.shape != logp.shape[:1]:
        raise ValueError(f"scores must hold one reward per row, shape ({logp.shape[0]},), got {tuple(scores.shape)}")
    mask = mask.to(logp.dtype)
    rewards = -kl_coef * kl_penalty(logp, ref_logp) * mask  # (B, T)
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = (positions * (mask > 0)).amax(dim=1)  # (B,) index of each row's last reply token
    has_reply = mask.sum(dim=1) > 0
    rows = torch.arange(mask.shape[0], device=mask.device)
    rewards[rows[has_reply], last[has_reply]] += scores[has_reply].to(rewards.dtype)
    return rewards


def gae(rewards, values, gamma: float = 1.0, lam: float = 0.95, mask=None):
    """Generalised advantage estimation: (B, T) rewards and values -> (advantages, returns), both (B, T).

    delta_t = r_t + gamma · V_{t+1} - V_t and A_t = delta_t + gamma · lam · A_{t+1}, computed backwards;
    the episode ends after the last position (V after it is 0). With a mask (1 on reply tokens, which
    must be contiguous, as right-padded replies are) masked positions are skipped: they get advantage 0
    and the recursion goes from one reply token to the next. returns = advantages + values, the target
    of the value model. lam = 1 gives the Monte-Carlo return minus V; lam = 0 the one-step TD error.

    >>> gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.zeros(1, 3), gamma=1.0, lam=1.0)[0]
    tensor([[1., 1., 1.]])
    """
    _check_same_shape(rewards=rewards, values=values)
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must lie in [0, 1], got gamma={gamma}, lam={lam}")
    if mask is None:
        mask = torch.ones_like(rewards)
    _check_same_shape(rewards=rewards, mask=mask)
    mask = mask.to(rewards.dtype)
    T = rewards.shape[-1]
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[..., 0])      # (B,) V of the next reply token (0 after the end)
    next_advantage = torch.zeros_like(rewards[..., 0])  # (B,)
    for t in reversed(range(T)):
        m = mask[..., t]
        delta = rewards[..., t] + gamma * next_value - values[..., t]
        a = delta + gamma * lam * next_advantage
        advantages[..., t] = a * m
        # A masked position passes its successor's value and advantage through unchanged.
        next_value = torch.where(m > 0, values[..., t], next_value)
        next_advantage = torch.where(m > 0, a, next_advantage)
    return advantages, (advantages + values) * mask


def whiten(x, mask=None, eps: float = 1e-8):
    """(x - mean) / std over the masked positions (0 elsewhere): advantages on a common scale."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    return out if mask is None else out * mask.to(x.dtype)


def ppo_clip_loss(logp, old_logp, advantages, clip_eps: float = 0.2, mask=None):
    """PPO's clipped surrogate, as a loss to minimise: -mean(min(ratio · A, clip(ratio, 1 ± eps) · A)).

    ratio = pi_new / pi_old = exp(logp - old_logp) per token. The min makes the objective pessimistic:
    once a token's probability has moved more than eps in the direction its advantage favours, the
    gradient stops pushing it further; moves in the harmful direction are never clipped.

    >>> ppo_clip_loss(torch.log(torch.tensor([1.5])), torch.zeros(1), torch.tensor([1.0]))  # ratio clipped to 1.2
    tensor(-1.2000)
    """
    _check_same_shape(logp=logp, old_logp=old_logp, advantages=advantages)
    if clip_eps <= 0:
        raise ValueError(f"clip_eps must be > 0, got {clip_eps}")
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    return -masked_mean(torch.minimum(unclipped, clipped), mask)


def value_loss(values, old_values, returns, clip_eps: float | None = 0.2, mask=None):
    """0.5 · mean((V - returns)^2); with clip_eps, the larger of that and the error of V clipped to
    old_values ± clip_eps (PPO's value clipping, as in TRL's PPOTrainer): the value model too moves
    only a little per batch of rollouts.

    >>> value_loss(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1.0]))  # clipped V=0.2 misses by 0.8
    tensor(0.3200)
    """
    _check_same_shape(values=values, old_values=old_values, returns=returns)
    err = (values - returns) ** 2
    if clip_eps is not None:
        clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
        err = torch.maximum(err, (clipped - returns) ** 2)
    return 0.5 * masked_mean(err, mask)


# --- rollouts ----------------------------------------------------------------------------------

@torch.no_grad()
def generate_responses(model, tok, prompts, max_new_tokens=24, temperature=1.0, top_k=None, generator=None):
    """Sample one reply per prompt in the chat template; returns the reply token ids (lists), each
    ending with <|end|> if the model closed its turn within max_new_tokens.

    Prompts are grouped by token length so each group is one batch of llm_lib.sampling.generate
    (the model has no padding mask; left-padding would change what it reads). Groups run in sorted
    order of length, so the draws are reproducible with a seeded generator.
    """
    from llm_lib.sampling import generate
    from llm_lib.sft import format_chat

    end = tok.encode("<|end|>")[0]
    encoded = [tok.encode(format_chat(p)) for p in prompts]
    groups = {}
    for i, ids in enumerate(encoded):
        groups.setdefault(len(ids), []).append(i)
    replies = [None] * len(prompts)
    ctx = model.config.context_length
    for length in sorted(groups):
        rows = groups[length]
        n_new = max(0, min(max_new_tokens, ctx - length))
        batch = torch.tensor([encoded[i] for i in rows], dtype=torch.long)
        out = generate(model, batch, n_new, temperature=temperature, top_k=top_k, generator=generator,
                       eos_id=end)[:, length:]
        for row, i in enumerate(rows):
            reply = out[row].tolist()
            replies[i] = reply[:reply.index(end) + 1] if end in reply else reply
    return replies


@dataclass
class Rollout:
    """A batch of sampled replies with everything PPO needs; all (B, T) tensors share the layout
    inputs = seq[:, :-1], targets = seq[:, 1:], mask = 1 on reply targets."""

    inputs: torch.Tensor      # (B, T) token ids fed to the models
    targets: torch.Tensor     # (B, T) next tokens, -100 on prompt and padding
    mask: torch.Tensor        # (B, T) float, 1 on reply tokens
    logp: torch.Tensor        # (B, T) policy log-probs at sampling time ("old")
    ref_logp: torch.Tensor    # (B, T) reference log-probs
    values: torch.Tensor      # (B, T) value model's predictions
    scores: torch.Tensor      # (B,) reward model's score of each whole reply
    rewards: torch.Tensor     # (B, T) per-token rewards (KL penalty + score on the last token)
    advantages: torch.Tensor  # (B, T) GAE, whitened
    returns: torch.Tensor     # (B, T) value targets
    replies: list             # B reply strings


def _sequences(tok, prompts, replies, context_length):
    from llm_lib.sft import format_chat

    pad = tok.encode("<|endoftext|>")[0]
    seqs, starts = [], []
    for p, r in zip(prompts, replies):
        prompt_ids = tok.encode(format_chat(p))
        seqs.append((prompt_ids + list(r))[:context_length + 1])
        starts.append(len(prompt_ids))
    T = max(len(s) for s in seqs) - 1
    inputs = torch.full((len(seqs), T), pad, dtype=torch.long)
    targets = torch.full((len(seqs), T), -100, dtype=torch.long)
    for row, (s, start) in enumerate(zip(seqs, starts)):
        inputs[row, :len(s) - 1] = torch.tensor(s[:-1])
        # target position t predicts s[t + 1]; reply tokens are s[start:], i.e. targets from start - 1
        targets[row, start - 1:len(s) - 1] = torch.tensor(s[start:], dtype=torch.long)
    return inputs, targets, seqs


@torch.no_grad()
def make_rollout(policy, ref, reward_model, value_model, tok, prompts, config, generator=None):
    """Steps 1-3 of PPO for one batch of prompts: sample, score, compute advantages."""
    from llm_lib.reward import pad_right

    policy.eval()
    reply_ids = generate_responses(policy, tok, prompts, config.max_new_tokens, config.temperature,
                                   generator=generator)
    inputs, targets, seqs = _sequences(tok, prompts, reply_ids, policy.config.context_length)
    mask = (targets != -100).float()
    logp = token_logprobs(policy(inputs), targets)
    ref_logp = token_logprobs(ref(inputs), targets)
    values = value_model(inputs) * mask
    # The reward model reads the whole prompt + reply and scores it at the last real token.
    idx, lengths = pad_right(seqs, tok.encode("<|endoftext|>")[0])
    end_id = tok.encode("<|end|>")[0]
    scores = reward_model.score(idx, lengths)
    # A reply that never closed its turn gets a fixed penalty instead of a score: the reward model was
    # never trained on unfinished replies, so its score there means nothing (a common RLHF practice).
    finished = torch.tensor([len(r) > 0 and r[-1] == end_id for r in reply_ids])
    scores = torch.where(finished, scores, torch.full_like(scores, config.unfinished_penalty))
    rewards = per_token_rewards(scores, logp, ref_logp, mask, config.kl_coef)
    advantages, returns = gae(rewards, values, config.gamma, config.lam, mask)
    advantages = whiten(advantages, mask)
    replies = [tok.decode(r).removesuffix("<|end|>") for r in reply_ids]
    return Rollout(inputs, targets, mask, logp, ref_logp, values, scores, rewards, advantages, returns, replies)


@dataclass
class PPOConfig:
    """Hyperparameters of ppo_train (defaults sized for the course's tiny model on a laptop)."""

    steps: int = 60               # rollout + update rounds
    batch_size: int = 32          # prompts per rollout
    minibatch_size: int = 16
    ppo_epochs: int = 2           # passes over each rollout
    lr: float = 1e-5
    value_lr: float = 1e-4
    kl_coef: float = 0.05
    clip_eps: float = 0.2
    value_clip: float = 0.2
    gamma: float = 1.0
    lam: float = 0.95
    max_new_tokens: int = 16
    temperature: float = 1.0
    unfinished_penalty: float = -2.0
    seed: int = 0
    sample_every: int = 10        # keep a few sample replies every this many steps
    progress: bool = True


def ppo_train(policy, ref, reward_model, value_model, tok, prompts, config: PPOConfig, judge=None):
    """Train `policy` with PPO against `reward_model`, staying near `ref`; returns the history.

    judge(prompt, reply) -> float, optional: a ground-truth score logged beside the reward model's, so
    you can see whether what the reward model likes is what you wanted (reward hacking).
    History per step: score (mean reward-model score), kl (mean summed KL estimate per reply),
    reward (score - kl_coef·kl), length (mean reply tokens), judge, clipfrac, and samples.
    """
    from tqdm.auto import tqdm

    from llm_lib.optim import AdamW

    if not prompts:
        raise ValueError("ppo_train needs prompts")
    ref.eval()            # frozen: only ever run under no_grad (make_rollout)
    reward_model.eval()
    rng = random.Random(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    opt = AdamW(policy.parameters(), lr=config.lr, weight_decay=0.0)
    vopt = AdamW(value_model.parameters(), lr=config.value_lr, weight_decay=0.0)
    history = {k: [] for k in ("step", "score", "kl", "reward", "length", "judge", "clipfrac", "samples")}
    for step in tqdm(range(config.steps), desc="ppo", disable=not config.progress):
        batch_prompts = [rng.choice(prompts) for _ in range(config.batch_size)]
        ro = make_rollout(policy, ref, reward_model, value_model, tok, batch_prompts, config, gen)
        policy.train()
        value_model.train()
        clipped = []
        for _ in range(config.ppo_epochs):
            order = torch.randperm(config.batch_size, generator=gen)
            for i in range(0, config.batch_size, config.minibatch_size):
                rows = order[i:i + config.minibatch_size]
                m = ro.mask[rows]
                if m.sum() == 0:
                    continue
                logp = token_logprobs(policy(ro.inputs[rows]), ro.targets[rows])
                loss = ppo_clip_loss(logp, ro.logp[rows], ro.advantages[rows], config.clip_eps, m)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
                opt.step()
                v = value_model(ro.inputs[rows])
                vloss = value_loss(v, ro.values[rows], ro.returns[rows], config.value_clip, m)
                vopt.zero_grad(set_to_none=True)
                vloss.backward()
                torch.nn.utils.clip_grad_norm_(value_model.parameters(), 1.0)
                vopt.step()
                ratio = torch.exp(logp.detach() - ro.logp[rows])
                clipped.append(masked_mean(((ratio - 1).abs() > config.clip_eps).float(), m).item())
        kl = (kl_penalty(ro.logp, ro.ref_logp) * ro.mask).sum(dim=1)  # (B,) summed over each reply
        history["step"].append(step)
        history["score"].append(ro.scores.mean().item())
        history["kl"].append(kl.mean().item())
        history["reward"].append((ro.scores - config.kl_coef * kl).mean().item())
        history["length"].append(ro.mask.sum(dim=1).mean().item())
        history["clipfrac"].append(sum(clipped) / max(len(clipped), 1))
        if judge is not None:
            history["judge"].append(sum(judge(p, r) for p, r in zip(batch_prompts, ro.replies)) / len(ro.replies))
        if step % config.sample_every == 0 or step == config.steps - 1:
            history["samples"].append({"step": step, "prompt": batch_prompts[0], "reply": ro.replies[0],
                                       "score": round(ro.scores[0].item(), 3)})
    policy.eval()
    value_model.eval()
    return history


def value_model_from(reward_model):
    """A value model initialised from the reward model (as InstructGPT did): a copy, trained separately."""
    value_model = copy.deepcopy(reward_model)
    for p in value_model.parameters():
        p.requires_grad_(True)
    return value_model


# --- the course PPO model (pipeline stage "ppo") -----------------------------------------------------

def build_ppo_model(out, recipe, tok, sft_model, reward_model):
    """PPO from the SFT model against the course reward model (pipeline.RECIPES["ppo"]) into `out`.

    Writes model.safetensors, config.json, history.json (per step: score, kl, reward, length, judge =
    the ground-truth rule's mean score, samples) and eval.json (greedy replies of the PPO and SFT
    models on held-out tasks, judged by the reward model and by the rule); returns stats with the
    before/after numbers and the per-step curves (small) for the chapter's plots.
    """
    import os
    import time
    from pathlib import Path

    from llm_lib.reward import compare_policies, rule_score
    from llm_lib.sft import make_tasks
    from llm_lib.train import save_stage_artifact

    out = Path(out)
    seed = recipe["seed"]
    train_tasks = make_tasks(recipe["n_prompts"], seed=seed, split="train")
    by_prompt = {t.prompt: t for t in train_tasks}
    test_tasks = list(dict.fromkeys(make_tasks(recipe["n_test"], seed=seed, split="test")))
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        torch.manual_seed(seed)
        policy, ref = copy.deepcopy(sft_model), copy.deepcopy(sft_model)
        value_model = value_model_from(reward_model)
        start = time.perf_counter()
        history = ppo_train(policy, ref, reward_model, value_model, tok, list(by_prompt),
                            PPOConfig(**recipe["ppo"], seed=seed),
                            judge=lambda p, r: rule_score(by_prompt[p], r))
        train_seconds = time.perf_counter() - start
        result = compare_policies(policy, ref, reward_model, tok, test_tasks, recipe["ppo"]["max_new_tokens"])
    finally:
        torch.set_num_threads(threads)
    save_stage_artifact(out, policy, history, result)
    r4 = lambda xs: [round(x, 4) for x in xs]
    return {"steps": recipe["ppo"]["steps"], "train_prompts": len(by_prompt), "test_prompts": len(test_tasks),
            **{k: round(v, 4) for k, v in result.items() if isinstance(v, float)},
            "curves": {k: r4(history[k]) for k in ("score", "kl", "reward", "length", "judge")},
            "train_seconds": round(train_seconds, 1), "threads": os.cpu_count()}


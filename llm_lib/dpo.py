"""Direct Preference Optimization: learn from preference pairs with no reward model and no sampling.

    >>> history = train_dpo(policy, ref, tok, pairs, DPOConfig(steps=120, beta=0.1))

RLHF maximises E[r(x, y)] - beta · KL(pi || pi_ref). Its optimum is pi*(y|x) ∝ pi_ref(y|x) · exp(r(x, y) / beta),
so any policy defines an "implicit reward" r(x, y) = beta · log(pi(y|x) / pi_ref(y|x)) (up to a term
that depends on x only and cancels between two replies to the same prompt). Put that reward into the
Bradley-Terry loss and the reward model disappears:

    loss = -log sigmoid(beta · [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))]).

`dpo_loss` computes this ("sigmoid") and two variants: IPO ("ipo", a squared loss that pulls the
log-ratio margin to 1/(2·beta) instead of to infinity) and the SLiC-style hinge ("hinge"). The formulas
are TRL's (DPOTrainer's loss_type of the same names). Sequence log-probabilities come from
`sequence_logprob`, which sums the reply tokens only (the prompt is masked with -100).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llm_lib.ppo import token_logprobs

__all__ = ["sequence_logprob", "dpo_loss", "implicit_reward", "pair_batch", "policy_logprobs", "DPOConfig",
           "train_dpo", "LOSS_TYPES", "build_dpo_model"]

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def sequence_logprob(logits, labels, average: bool = False):
    """log pi(reply | prompt) for each row: the sum of log p(labels[t]) over positions where labels is
    not -100. (B, T, V), (B, T) -> (B,). average=True divides by the number of reply tokens (IPO's
    length normalisation in TRL). A row with no reply token sums to 0 (and averages to 0).

    labels follow GPT.forward's targets: labels[b, t] is the token that comes after position t.

    >>> sequence_logprob(torch.zeros(1, 3, 4), torch.tensor([[-100, 1, 2]]))   # two tokens, each 1/4
    tensor([-2.7726])
    """
    logp = token_logprobs(logits, labels)  # (B, T), 0 where labels == -100
    total = logp.sum(dim=-1)
    if not average:
        return total
    n = (labels != -100).sum(dim=-1).clamp(min=1)
    return total / n


def _check_logps(pc, pr, rc, rr):
    names = ("policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected")
    for name, x in zip(names, (pc, pr, rc, rr)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} log-probs must be a tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} log-probs must be floats, got dtype {x.dtype}")
    shapes = {name: tuple(x.shape) for name, x in zip(names, (pc, pr, rc, rr))}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"the four log-prob tensors need one value per pair, with one shape; got {shapes}")


def implicit_reward(policy_logp, ref_logp, beta: float):
    """DPO's implicit reward of a reply: beta · (log pi(y|x) - log pi_ref(y|x)).

    >>> implicit_reward(torch.tensor([-3.0]), torch.tensor([-5.0]), beta=0.1)
    tensor([0.2000])
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return beta * (policy_logp - ref_logp)


def dpo_loss(pc, pr, rc, rr, beta: float = 0.1, loss_type: str = "sigmoid"):
    """Per-pair DPO losses and the implicit rewards of the chosen and rejected replies.

    pc, pr: the policy's sequence log-probs of the chosen and rejected replies, (B,);
    rc, rr: the reference model's, (B,). With h = (pc - pr) - (rc - rr), the log-ratio margin:
      "sigmoid": -log sigmoid(beta · h)          (DPO, Rafailov et al. 2023)
      "ipo":     (h - 1 / (2 · beta))^2          (IPO, Azar et al. 2023)
      "hinge":   max(0, 1 - beta · h)            (SLiC-style hinge)
    Returns (losses (B,), chosen_rewards (B,), rejected_rewards (B,)); the rewards are detached
    beta · (pc - rc) and beta · (pr - rr), for logging (their gap is the "reward margin").

    >>> losses, c, r = dpo_loss(*torch.zeros(4, 1), beta=0.1)   # policy == reference: ln 2
    >>> losses
    tensor([0.6931])
    """
    _check_logps(pc, pr, rc, rr)
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    h = (pc - pr) - (rc - rr)  # how much more the policy prefers chosen over rejected than the reference does
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    else:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    chosen_rewards = implicit_reward(pc, rc, beta).detach()
    rejected_rewards = implicit_reward(pr, rr, beta).detach()
    return losses, chosen_rewards, rejected_rewards


def pair_batch(tok, prompts, responses, context_length):
    """Chat-formatted (prompt, response) rows -> (inputs (B, T), labels (B, T)) for sequence_logprob.

    inputs = seq[:-1] and labels = seq[1:] of each format_chat(prompt, response), right-padded with
    <|endoftext|> (labels -100 there), and -100 on every label that is still part of the prompt, so
    only the response tokens (and its closing <|end|>) count. Sequences longer than context_length + 1
    tokens are truncated on the right (a truncated response keeps only its first tokens).
    """
    from llm_lib.sft import format_chat

    if len(prompts) != len(responses) or not prompts:
        raise ValueError(f"need as many responses as prompts (and at least one), got {len(prompts)} and {len(responses)}")
    pad = tok.encode("<|endoftext|>")[0]
    rows = []
    for p, r in zip(prompts, responses):
        prompt_ids = tok.encode(format_chat(p))
        # = format_chat(p, r) encoded, but a sampled reply holding a special token is kept as it is
        full = (prompt_ids + tok.encode(r) + tok.encode("<|end|>"))[:context_length + 1]
        rows.append((full, len(prompt_ids)))
    T = max(len(full) for full, _ in rows) - 1
    inputs = torch.full((len(rows), T), pad, dtype=torch.long)
    labels = torch.full((len(rows), T), -100, dtype=torch.long)
    for b, (full, start) in enumerate(rows):
        inputs[b, :len(full) - 1] = torch.tensor(full[:-1])
        if start < len(full):  # label t predicts full[t + 1]: response tokens full[start:] sit at t >= start - 1
            labels[b, start - 1:len(full) - 1] = torch.tensor(full[start:])
    return inputs, labels


def policy_logprobs(model, inputs, labels, average=False):
    """Sequence log-probs (B,) of the labelled tokens under `model` (a GPT)."""
    return sequence_logprob(model(inputs), labels, average)


@dataclass
class DPOConfig:
    """Hyperparameters of train_dpo."""

    steps: int = 120
    batch_size: int = 16
    lr: float = 5e-5
    beta: float = 0.1
    loss_type: str = "sigmoid"
    seed: int = 0
    progress: bool = True


def train_dpo(policy, ref, tok, pairs, config: DPOConfig, eval_pairs=None, eval_interval=20):
    """Train `policy` on preference pairs with dpo_loss against the frozen `ref`; returns the history.

    History per step: loss, chosen_reward and rejected_reward (mean implicit rewards), margin (their
    mean difference), accuracy (share of pairs with a positive margin); with eval_pairs, the same
    margin and accuracy on held-out pairs every eval_interval steps.
    """
    from tqdm.auto import tqdm

    from llm_lib.optim import AdamW

    if not pairs:
        raise ValueError("train_dpo needs preference pairs")
    ref.eval()  # frozen: its log-probs are computed under no_grad
    ctx = policy.config.context_length
    rng = random.Random(config.seed)
    opt = AdamW(policy.parameters(), lr=config.lr, weight_decay=0.0)
    average = config.loss_type == "ipo"
    history = {k: [] for k in ("step", "loss", "chosen_reward", "rejected_reward", "margin", "accuracy",
                               "eval_step", "eval_margin", "eval_accuracy")}

    def logps(model, chunk):
        inputs, labels = pair_batch(tok, [p.prompt for p in chunk] * 2,
                                    [p.chosen for p in chunk] + [p.rejected for p in chunk], ctx)
        lp = policy_logprobs(model, inputs, labels, average)
        return lp[:len(chunk)], lp[len(chunk):]

    @torch.no_grad()
    def evaluate(step):
        policy.eval()
        margins = []
        for i in range(0, len(eval_pairs), 64):
            chunk = eval_pairs[i:i + 64]
            _, c, r = dpo_loss(*logps(policy, chunk), *logps(ref, chunk), config.beta, config.loss_type)
            margins.append(c - r)
        m = torch.cat(margins)
        history["eval_step"].append(step)
        history["eval_margin"].append(m.mean().item())
        history["eval_accuracy"].append((m > 0).float().mean().item())
        policy.train()

    policy.train()
    for step in tqdm(range(config.steps), desc="dpo", disable=not config.progress):
        if eval_pairs and step % eval_interval == 0:
            evaluate(step)
        chunk = rng.sample(pairs, min(config.batch_size, len(pairs)))
        with torch.no_grad():
            rc, rr = logps(ref, chunk)
        pc, pr = logps(policy, chunk)
        losses, c, r = dpo_loss(pc, pr, rc, rr, config.beta, config.loss_type)
        loss = losses.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        history["step"].append(step)
        history["loss"].append(loss.item())
        history["chosen_reward"].append(c.mean().item())
        history["rejected_reward"].append(r.mean().item())
        history["margin"].append((c - r).mean().item())
        history["accuracy"].append((c > r).float().mean().item())
    if eval_pairs:
        evaluate(config.steps)
    policy.eval()
    return history


# --- the course DPO model (pipeline stage "dpo") -----------------------------------------------------

def build_dpo_model(out, recipe, tok, sft_model, reward_model, train_pairs, test_pairs):
    """DPO from the SFT model on the reward model's preference pairs (pipeline.RECIPES["dpo"]) into `out`.

    Writes model.safetensors, config.json, history.json (per step: loss, implicit rewards, margin,
    accuracy; held-out margin and accuracy) and eval.json (greedy replies of the DPO and SFT models on
    held-out tasks, judged by the reward model and by the rule); returns stats for the manifest.
    """
    import copy
    import os
    import time
    from pathlib import Path

    from llm_lib.reward import compare_policies
    from llm_lib.sft import make_tasks
    from llm_lib.train import save_stage_artifact

    out = Path(out)
    seed = recipe["seed"]
    test_tasks = list(dict.fromkeys(make_tasks(recipe["n_test"], seed=seed, split="test")))
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        torch.manual_seed(seed)
        policy, ref = copy.deepcopy(sft_model), copy.deepcopy(sft_model)
        start = time.perf_counter()
        history = train_dpo(policy, ref, tok, train_pairs, DPOConfig(**recipe["dpo"], seed=seed),
                            eval_pairs=test_pairs, eval_interval=recipe["eval_interval"])
        train_seconds = time.perf_counter() - start
        result = compare_policies(policy, ref, reward_model, tok, test_tasks, recipe["max_new_tokens"])
    finally:
        torch.set_num_threads(threads)
    save_stage_artifact(out, policy, history, result)
    r4 = lambda xs: [round(x, 4) for x in xs]
    return {"steps": recipe["dpo"]["steps"], "train_pairs": len(train_pairs), "test_prompts": len(test_tasks),
            **{k: round(v, 4) for k, v in result.items() if isinstance(v, float)},
            "curves": {k: r4(history[k]) for k in ("loss", "margin", "chosen_reward", "rejected_reward", "accuracy",
                                                   "eval_step", "eval_margin", "eval_accuracy")},
            "train_seconds": round(train_seconds, 1), "threads": os.cpu_count()}

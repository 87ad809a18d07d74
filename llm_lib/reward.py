"""Preference data and a Bradley-Terry reward model: the first half of RLHF (chapter 10).

    >>> pairs = make_preference_pairs(make_tasks(400, seed=0), seed=0)   # synthetic, rule-judged
    >>> rm = RewardModel(load("sft"))                  # the SFT model's trunk + a scalar head
    >>> history = train_reward_model(rm, tok, pairs, steps=150)
    >>> rm.score_texts(tok, ["What is 3 plus 4?"] * 2, ["7", "9"])   # higher = preferred

How the preference data is built (no humans anywhere): every prompt is a generated, checkable task
(`llm_lib.sft.make_tasks`), and a fixed rule, `rule_score`, says which of two responses is better:
a correct answer beats a wrong one, and a concise answer beats one padded with rambling. Each pair's
"chosen" response is the task's reference answer; its "rejected" one is a wrong answer (another
task's answer), the right answer followed by rambling, or an evasive non-answer. Pairs can also come
from the model itself (`sampled_preference_pairs`): draw several replies per prompt and pair the best
with the worst by the rule, which is how real preference data is collected (with people as the rule).

The Bradley-Terry model says P(a preferred to b) = sigmoid(r(a) - r(b)) for a scalar "reward" r;
fitting r to pairs by maximum likelihood is the loss -log sigmoid(r_chosen - r_rejected).

Shapes: B batch, T positions, C d_model.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["PreferencePair", "rule_score", "make_preference_pairs", "sampled_preference_pairs",
           "bradley_terry_loss", "pairwise_accuracy", "win_rate", "gpt_hidden_states", "RewardModel",
           "encode_chat", "pad_right", "train_reward_model", "REJECTION_KINDS", "evaluate_reward_model",
           "compare_policies", "preference_data", "build_reward_model", "load_reward_model", "pairs_to_json",
           "pairs_from_json"]

# Replies a tiny Shakespeare model could plausibly give instead of answering; never correct.
EVASIONS = ["I know not, my lord.", "What say you?", "Speak, and I will tell thee.", "Alas, I cannot say.",
            "Ask me no more.", "Good morrow to you."]
RAMBLES = ["and so, my good lord, I will tell thee more anon", "which is to say, and thus, and so forth",
           "or so I think, but who can say what the morrow brings", "as the poet saith, and more besides"]
REJECTION_KINDS = ("wrong", "rambling", "evasive")


@dataclass(frozen=True)
class PreferencePair:
    """One comparison: for `prompt`, `chosen` is preferred to `rejected`; `kind` says how rejected was made."""

    prompt: str
    chosen: str
    rejected: str
    kind: str


def _is_correct(task, response):
    from llm_lib.sft import is_correct

    return is_correct(task, response)


def rule_score(task, response: str) -> float:
    """The ground-truth judge: 1 for a correct answer (llm_lib.sft.is_correct) + 0.5 for a concise one.

    Concise = at most 4 characters longer than the reference answer, so "7" and "7." are concise but
    "7, or so I think" is not: a correct answer drowned in rambling scores 1.0, a bare correct one 1.5.

    >>> rule_score(Task("What is 3 plus 4?", "7"), "7"), rule_score(Task("What is 3 plus 4?", "7"), "9")
    (1.5, 0.5)
    """
    concise = len(response.strip()) <= len(task.answer) + 4
    return float(_is_correct(task, response)) + 0.5 * concise


def make_preference_pairs(tasks, seed: int = 0, kinds=REJECTION_KINDS) -> list[PreferencePair]:
    """One synthetic, rule-judged pair per task: chosen = the reference answer, rejected = one of `kinds`.

    "wrong": the answer of another task of the same family that is not correct here; "rambling": the right answer followed by
    filler; "evasive": a Shakespearean non-answer. Kinds take turns (task i gets kinds[i % len(kinds)]),
    the filler is drawn with random.Random(seed). Every pair is checked: rule_score(chosen) > rule_score(rejected).
    """
    if not tasks:
        raise ValueError("make_preference_pairs needs at least one task")
    unknown = set(kinds) - set(REJECTION_KINDS)
    if not kinds or unknown:
        raise ValueError(f"kinds must be a non-empty subset of {REJECTION_KINDS}, got {kinds!r}")
    rng = random.Random(seed)
    answers = {}  # task family -> its answers: a wrong answer of the same form ("13" for a sum, not "king")
    for t in tasks:
        answers.setdefault(getattr(t, "kind", ""), set()).add(t.answer)
    answers = {k: sorted(v) for k, v in answers.items()}
    pairs = []
    for i, task in enumerate(tasks):
        kind = kinds[i % len(kinds)]
        if kind == "wrong":
            wrong = [a for a in answers[getattr(task, "kind", "")] if not _is_correct(task, a)]
            if not wrong:  # every answer in the set fits this task: make one up
                wrong = [str(int(a) + 1) if a.isdigit() else a + " not" for a in [task.answer]]
            rejected = rng.choice(wrong)
        elif kind == "rambling":
            rejected = f"{task.answer}, {rng.choice(RAMBLES)}."
        else:
            rejected = rng.choice(EVASIONS)
        if not rule_score(task, task.answer) > rule_score(task, rejected):
            raise ValueError(f"the rule does not prefer the reference answer {task.answer!r} to {rejected!r} "
                             f"for {task.prompt!r}; check llm_lib.sft.is_correct")
        pairs.append(PreferencePair(task.prompt, task.answer, rejected, kind))
    return pairs


def sampled_preference_pairs(model, tok, tasks, n_samples: int = 4, seed: int = 0, max_new_tokens: int = 24,
                             temperature: float = 1.0) -> list[PreferencePair]:
    """On-policy pairs: sample n_samples replies per task from `model`, pair the best with the worst by
    rule_score (tasks whose replies all score the same give no pair). kind = "sampled"."""
    from llm_lib.ppo import generate_responses

    prompts = [t.prompt for t in tasks for _ in range(n_samples)]
    replies = generate_responses(model, tok, prompts, max_new_tokens, temperature=temperature,
                                 generator=torch.Generator().manual_seed(seed))
    pairs = []
    for k, task in enumerate(tasks):
        group = [tok.decode(r).removesuffix("<|end|>") for r in replies[k * n_samples:(k + 1) * n_samples]]
        scored = sorted(group, key=lambda r: rule_score(task, r))
        if rule_score(task, scored[-1]) > rule_score(task, scored[0]):
            pairs.append(PreferencePair(task.prompt, scored[-1], scored[0], "sampled"))
    return pairs


# --- the Bradley-Terry loss --------------------------------------------------------------------

def _check_pair_tensors(a, b, names):
    for name, x in zip(names, (a, b)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a float tensor, got dtype {x.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape (one entry per pair), "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.numel() == 0:
        raise ValueError(f"{names[0]} is empty: a loss over zero pairs is undefined")


def bradley_terry_loss(r_chosen, r_rejected):
    """Mean over pairs of -log sigmoid(r_chosen - r_rejected): the negative log-likelihood of the
    preferences under Bradley-Terry. Written with logsigmoid, which stays finite for any margin.

    >>> bradley_terry_loss(torch.tensor([0.0]), torch.tensor([0.0]))   # no preference yet: ln 2
    tensor(0.6931)
    """
    _check_pair_tensors(r_chosen, r_rejected, ("r_chosen", "r_rejected"))
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def pairwise_accuracy(r_chosen, r_rejected) -> float:
    """Share of pairs the scores order correctly (r_chosen > r_rejected; a tie counts as wrong).

    >>> pairwise_accuracy(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    0.5
    """
    _check_pair_tensors(r_chosen, r_rejected, ("r_chosen", "r_rejected"))
    return (r_chosen > r_rejected).float().mean().item()


def win_rate(scores_a, scores_b) -> float:
    """Share of prompts where a beats b, ties counting half (how head-to-head comparisons are scored).

    >>> win_rate(torch.tensor([2.0, 1.0, 0.0]), torch.tensor([1.0, 1.0, 1.0]))
    0.5
    """
    a = torch.as_tensor(scores_a, dtype=torch.float64)
    b = torch.as_tensor(scores_b, dtype=torch.float64)
    _check_pair_tensors(a, b, ("scores_a", "scores_b"))
    return ((a > b).double().mean() + 0.5 * (a == b).double().mean()).item()


# --- the reward model --------------------------------------------------------------------------

def gpt_hidden_states(gpt, idx):
    """The final hidden vectors of a llm_lib GPT, (B, T) ids -> (B, T, C): its forward pass without the
    output head (the vectors the head would turn into next-token logits)."""
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"idx must be a (B, T) tensor of token ids, got {getattr(idx, 'shape', type(idx).__name__)}")
    T = idx.shape[1]
    if T > gpt.config.context_length:
        raise ValueError(f"sequence of {T} tokens exceeds context_length={gpt.config.context_length}")
    x = gpt.tok_emb(idx)  # (B, T, C)
    if gpt.pos_emb is not None:
        x = x + gpt.pos_emb(torch.arange(T, device=idx.device))
    x = gpt.dropout(x)
    for block in gpt.blocks:
        x = block(x, rope=gpt.rope)
    return gpt.norm_f(x)  # (B, T, C)


class RewardModel(nn.Module):
    """A GPT trunk (its output head unused) + a linear head giving one scalar per position.

    forward(idx) -> (B, T) scores, one per prefix; score(idx, lengths) -> (B,) the score at each
    sequence's last real token, which has read the whole prompt and response (causal attention, so
    right-padding after it changes nothing). The same class serves as PPO's value model.
    The trunk is the GPT passed in (not a copy): pass copy.deepcopy(gpt) to keep the original.
    """

    def __init__(self, trunk):
        super().__init__()
        self.trunk = trunk
        self.config = trunk.config
        self.head = nn.Linear(trunk.config.d_model, 1)
        nn.init.zeros_(self.head.weight)  # every response starts at reward 0: no built-in preference
        nn.init.zeros_(self.head.bias)

    def forward(self, idx):  # (B, T) -> (B, T)
        return self.head(gpt_hidden_states(self.trunk, idx)).squeeze(-1)

    def score(self, idx, lengths):
        """(B, T) right-padded ids and (B,) true lengths -> (B,) score at position lengths - 1."""
        lengths = torch.as_tensor(lengths, device=idx.device)
        if lengths.shape != idx.shape[:1] or (lengths < 1).any() or (lengths > idx.shape[1]).any():
            raise ValueError(f"lengths must hold one length in [1, {idx.shape[1]}] per row of idx, got {lengths.tolist()}")
        # Run only as far as the longest sequence: the padding beyond it is never read.
        scores = self(idx[:, :int(lengths.max())])  # (B, T')
        return scores.gather(1, (lengths - 1)[:, None]).squeeze(1)

    @torch.no_grad()
    def score_texts(self, tok, prompts, responses, batch_size=64):
        """Reward of each (prompt, response), both plain strings, in the chat template; (N,) tensor."""
        out = []
        was_training = self.training
        self.eval()
        try:
            for i in range(0, len(prompts), batch_size):
                seqs = [encode_chat(tok, p, r, self.config.context_length)
                        for p, r in zip(prompts[i:i + batch_size], responses[i:i + batch_size])]
                idx, lengths = pad_right(seqs, pad_id=tok.encode("<|endoftext|>")[0])
                out.append(self.score(idx, lengths))
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0)


def encode_chat(tok, prompt: str, response: str, context_length: int) -> list[int]:
    """Token ids of format_chat(prompt, response), cut to the first context_length tokens.

    The response is encoded on its own and closed with <|end|> (the same ids format_chat gives), so
    a sampled reply that contains a special token (a model breaking the template) can still be scored.

    >>> tok.decode(encode_chat(tok, "What is 3 plus 4?", "7", 256))
    '<|user|>What is 3 plus 4?<|end|><|assistant|>7<|end|>'
    """
    from llm_lib.sft import format_chat

    ids = tok.encode(format_chat(prompt)) + tok.encode(response) + tok.encode("<|end|>")
    return ids[:context_length]


def pad_right(seqs, pad_id: int):
    """Lists of ids -> ((B, T) tensor padded on the right with pad_id, (B,) lengths).

    >>> pad_right([[1, 2, 3], [4]], pad_id=0)
    (tensor([[1, 2, 3], [4, 0, 0]]), tensor([3, 1]))
    """
    if not seqs or any(len(s) == 0 for s in seqs):
        raise ValueError("pad_right needs at least one sequence and no empty ones")
    lengths = torch.tensor([len(s) for s in seqs])
    idx = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
    for row, s in enumerate(seqs):
        idx[row, :len(s)] = torch.as_tensor(s, dtype=torch.long)
    return idx, lengths


def _pair_batch(tok, pairs, context_length):
    pad = tok.encode("<|endoftext|>")[0]
    seqs = [encode_chat(tok, p.prompt, p.chosen, context_length) for p in pairs] + \
           [encode_chat(tok, p.prompt, p.rejected, context_length) for p in pairs]
    return pad_right(seqs, pad)  # chosen rows first, then rejected


@torch.no_grad()
def evaluate_reward_model(rm, tok, pairs, batch_size=64):
    """(pairwise accuracy, mean margin r_chosen - r_rejected) on `pairs`, plus accuracy per pair kind."""
    was_training = rm.training
    rm.eval()
    rc, rr = [], []
    try:
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i:i + batch_size]
            idx, lengths = _pair_batch(tok, chunk, rm.config.context_length)
            s = rm.score(idx, lengths)
            rc.append(s[:len(chunk)])
            rr.append(s[len(chunk):])
    finally:
        rm.train(was_training)
    rc, rr = torch.cat(rc), torch.cat(rr)
    by_kind = {}
    for kind in sorted({p.kind for p in pairs}):
        keep = torch.tensor([p.kind == kind for p in pairs])
        by_kind[kind] = pairwise_accuracy(rc[keep], rr[keep])
    return {"accuracy": pairwise_accuracy(rc, rr), "margin": (rc - rr).mean().item(), "by_kind": by_kind}


def train_reward_model(rm, tok, pairs, steps=150, batch_size=32, lr=3e-4, seed=0, eval_pairs=None,
                       eval_interval=25, progress=True):
    """Fit `rm` to `pairs` with bradley_terry_loss and AdamW; returns the history (lists per step).

    Each step draws batch_size pairs (random.Random(seed), so runs repeat exactly) and scores the
    chosen and rejected replies in one forward pass. With eval_pairs, held-out pairwise accuracy is
    recorded every eval_interval steps and at the end.
    """
    from tqdm.auto import tqdm

    from llm_lib.optim import AdamW

    if len(pairs) < 1 or steps < 1:
        raise ValueError(f"need at least one pair and one step, got {len(pairs)} pairs and steps={steps}")
    rng = random.Random(seed)
    opt = AdamW([p for p in rm.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    history = {"step": [], "loss": [], "accuracy": [], "eval_step": [], "eval_accuracy": []}
    rm.train()
    for step in tqdm(range(steps), desc="reward model", disable=not progress):
        if eval_pairs and step % eval_interval == 0:
            history["eval_step"].append(step)
            history["eval_accuracy"].append(evaluate_reward_model(rm, tok, eval_pairs)["accuracy"])
        chunk = rng.sample(pairs, min(batch_size, len(pairs)))
        idx, lengths = _pair_batch(tok, chunk, rm.config.context_length)
        scores = rm.score(idx, lengths)  # (2B,)
        rc, rr = scores[:len(chunk)], scores[len(chunk):]
        loss = bradley_terry_loss(rc, rr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
        opt.step()
        history["step"].append(step)
        history["loss"].append(loss.item())
        history["accuracy"].append(pairwise_accuracy(rc.detach(), rr.detach()))
    if eval_pairs:
        history["eval_step"].append(steps)
        history["eval_accuracy"].append(evaluate_reward_model(rm, tok, eval_pairs)["accuracy"])
    rm.eval()
    return history


# --- evaluation against a reference policy, and the course reward model (pipeline stage "reward") --

def pairs_to_json(pairs) -> str:
    """One JSON object per line per pair (prompt, chosen, rejected, kind)."""
    import json
    from dataclasses import asdict

    return "".join(json.dumps(asdict(p)) + "\n" for p in pairs)


def pairs_from_json(text: str) -> list[PreferencePair]:
    import json

    return [PreferencePair(**json.loads(line)) for line in text.splitlines() if line.strip()]


def compare_policies(model, reference, reward_model, tok, tasks, max_new_tokens=16):
    """Greedy replies of `model` and `reference` to each task, judged two ways: by the reward model
    and by the ground-truth rule (rule_score). Returns win rates of model over reference (ties half),
    accuracies, mean reward-model scores, template rates (replies closed by <|end|>) and the replies."""
    from llm_lib.sft import generate_replies

    prompts = [t.prompt for t in tasks]
    result = {"n_prompts": len(tasks)}
    replies = {}
    for name, m in (("model", model), ("reference", reference)):
        out = generate_replies(m, tok, prompts, max_new_tokens)
        replies[name] = [text for text, _ in out]
        result[f"{name}_template_rate"] = sum(ended for _, ended in out) / len(out)
        result[f"{name}_accuracy"] = sum(_is_correct(t, r) for t, r in zip(tasks, replies[name])) / len(tasks)
        result[f"{name}_rm_score"] = reward_model.score_texts(tok, prompts, replies[name]).mean().item()
    rm_model = reward_model.score_texts(tok, prompts, replies["model"])
    rm_ref = reward_model.score_texts(tok, prompts, replies["reference"])
    rule_model = torch.tensor([rule_score(t, r) for t, r in zip(tasks, replies["model"])])
    rule_ref = torch.tensor([rule_score(t, r) for t, r in zip(tasks, replies["reference"])])
    result["rm_win_rate"] = win_rate(rm_model, rm_ref)
    result["rule_win_rate"] = win_rate(rule_model, rule_ref)
    result["replies"] = [{"prompt": p, "model": a, "reference": b} for p, a, b in
                         zip(prompts, replies["model"], replies["reference"])]
    return result


def preference_data(recipe, tok, sft_model):
    """(train pairs, held-out pairs) for the course: synthetic pairs from make_tasks plus pairs sampled
    from the SFT model, on the train and test task splits (never sharing a prompt)."""
    from llm_lib.sft import make_tasks

    seed, d = recipe["seed"], recipe["data"]
    out = []
    for split, n, n_sampled in (("train", d["n_train"], d["n_sampled_train"]), ("test", d["n_test"], d["n_sampled_test"])):
        pairs = make_preference_pairs(make_tasks(n, seed=seed, split=split), seed=seed)
        if n_sampled:
            tasks = list(dict.fromkeys(make_tasks(n_sampled, seed=seed + 1, split=split)))
            pairs += sampled_preference_pairs(sft_model, tok, tasks, d["samples_per_prompt"], seed=seed,
                                              max_new_tokens=d["max_new_tokens"])
        out.append(pairs)
    return out[0], out[1]


def build_reward_model(out, recipe, tok, sft_model):
    """Train the course reward model (pipeline.RECIPES["reward"]) from the SFT model into folder `out`.

    Writes model.safetensors, config.json (the trunk's GPTConfig), history.json, pairs_train.jsonl and
    pairs_test.jsonl (the preference data, reused by the DPO stage); returns stats for the manifest
    with the held-out pairwise accuracy (overall and per kind of rejected reply).
    """
    import copy
    import json
    import os
    import time
    from dataclasses import asdict
    from pathlib import Path

    from llm_lib.data import atomic_write
    from llm_lib.train import save_model

    out = Path(out)
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        torch.manual_seed(recipe["seed"])
        start = time.perf_counter()
        train_pairs, test_pairs = preference_data(recipe, tok, sft_model)
        data_seconds = time.perf_counter() - start
        rm = RewardModel(copy.deepcopy(sft_model))
        before = evaluate_reward_model(rm, tok, test_pairs)
        history = train_reward_model(rm, tok, train_pairs, eval_pairs=test_pairs, seed=recipe["seed"], **recipe["train"])
        train_seconds = time.perf_counter() - start - data_seconds
        after = evaluate_reward_model(rm, tok, test_pairs)
        train_eval = evaluate_reward_model(rm, tok, train_pairs)
    finally:
        torch.set_num_threads(threads)
    save_model(rm, out / "model.safetensors")
    atomic_write(out / "config.json", json.dumps(asdict(sft_model.config), indent=2) + "\n")
    atomic_write(out / "history.json", json.dumps(history) + "\n")
    atomic_write(out / "pairs_train.jsonl", pairs_to_json(train_pairs))
    atomic_write(out / "pairs_test.jsonl", pairs_to_json(test_pairs))
    count = lambda pairs: {k: sum(p.kind == k for p in pairs) for k in sorted({p.kind for p in pairs})}
    return {"train_pairs": len(train_pairs), "test_pairs": len(test_pairs),
            "train_kinds": count(train_pairs), "test_kinds": count(test_pairs),
            "held_out_accuracy_before": round(before["accuracy"], 4),
            "held_out_accuracy": round(after["accuracy"], 4),
            "held_out_accuracy_by_kind": {k: round(v, 4) for k, v in after["by_kind"].items()},
            "held_out_margin": round(after["margin"], 4), "train_accuracy": round(train_eval["accuracy"], 4),
            "data_seconds": round(data_seconds, 1), "train_seconds": round(train_seconds, 1),
            "threads": os.cpu_count()}


def load_reward_model(path):
    """The RewardModel saved by build_reward_model, in eval mode."""
    import json
    from pathlib import Path

    from llm_lib.model import GPT, GPTConfig
    from llm_lib.train import load_model

    config = GPTConfig(**json.loads((Path(path) / "config.json").read_text()))
    return load_model(RewardModel(GPT(config)), Path(path) / "model.safetensors").eval()

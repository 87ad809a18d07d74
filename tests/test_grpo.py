"""GRPO pieces against independent formulations: advantages by a plain loop, k3 against the exact KL of
small categorical distributions, the clipped loss's gradients by their signs and by hand, bad input."""
import math
import random
import statistics

import pytest
import torch
import torch.nn.functional as F

from llm_lib import grpo
from llm_lib.model import GPT, GPTConfig


# --- group-normalised advantages -------------------------------------------------------------------

def loop_advantages(rewards, group_size, eps, scale_by_std=True):
    """The formula one group at a time, with the statistics module (sample std, n - 1)."""
    out = []
    for start in range(0, len(rewards), group_size):
        group = rewards[start:start + group_size]
        mean = statistics.fmean(group)
        std = statistics.stdev(group)
        out += [(r - mean) / (std + eps) if scale_by_std else r - mean for r in group]
    return out


@pytest.mark.parametrize("scale_by_std", [True, False])
def test_advantages_match_a_loop(scale_by_std):
    rng = random.Random(0)
    for _ in range(50):
        G, N = rng.randint(2, 9), rng.randint(1, 6)
        rewards = [rng.choice([0.0, 1.0, 1.1, 0.1, rng.uniform(-2, 2)]) for _ in range(N * G)]
        got = grpo.group_normalized_advantages(torch.tensor(rewards, dtype=torch.float64), G, eps=1e-4,
                                               scale_by_std=scale_by_std)
        want = loop_advantages(rewards, G, 1e-4, scale_by_std)
        assert got.tolist() == pytest.approx(want, rel=1e-9, abs=1e-12)
        # Each group sums to zero: the group mean is the baseline.
        assert got.reshape(N, G).sum(dim=1).abs().max() < 1e-9


def test_advantages_2d_lists_and_degenerate_groups():
    two_d = grpo.group_normalized_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]), 4)
    assert two_d.shape == (2, 4)
    # One right answer in four: it gets (1 - 1/4) / std, the others -(1/4) / std, std = 0.5 (n - 1).
    assert two_d[0].tolist() == pytest.approx([0.75 / (0.5 + 1e-4), -0.25 / (0.5 + 1e-4)] + [-0.25 / (0.5 + 1e-4)] * 2)
    assert two_d[1].tolist() == [0.0] * 4  # all right: no signal, exactly zero
    assert grpo.group_normalized_advantages([0, 1], 2).dtype == torch.float32


@pytest.mark.parametrize("rewards, group_size, error", [
    (torch.ones(6), 1, ValueError),          # a group of one has no baseline
    (torch.ones(6), 4, ValueError),          # 6 rewards do not make groups of 4
    (torch.ones(0), 2, ValueError),
    (torch.ones(2, 3), 2, ValueError),       # (N, G) with G != group_size
    (torch.ones(2, 2, 2), 2, ValueError),
    (torch.tensor([1.0, float("nan")]), 2, ValueError),
    (torch.tensor([True, False]), 2, TypeError),
    ("10", 2, TypeError),
    (torch.ones(4), 2.0, ValueError),
])
def test_advantages_bad_input(rewards, group_size, error):
    with pytest.raises(error):
        grpo.group_normalized_advantages(rewards, group_size)


def test_advantages_negative_eps():
    with pytest.raises(ValueError, match="eps"):
        grpo.group_normalized_advantages(torch.ones(4), 2, eps=-1.0)


# --- k3 KL estimator --------------------------------------------------------------------------------

def test_k3_is_non_negative_and_zero_only_where_models_agree():
    gen = torch.Generator().manual_seed(0)
    logp, ref = torch.randn(1000, generator=gen) * 3, torch.randn(1000, generator=gen) * 3
    kl = grpo.k3_kl(logp, ref)
    assert (kl >= 0).all()
    assert (kl[(logp - ref).abs() > 1e-3] > 0).all()
    assert grpo.k3_kl(logp, logp).abs().max() == 0


def test_k3_expectation_is_the_exact_kl():
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        p = torch.softmax(torch.randn(7, generator=gen, dtype=torch.float64) * 2, dim=0)  # the policy
        q = torch.softmax(torch.randn(7, generator=gen, dtype=torch.float64) * 2, dim=0)  # the reference
        exact = (p * (p / q).log()).sum()
        # The expectation over tokens drawn from p, by enumeration: equal to KL(p || q) exactly.
        enumerated = (p * grpo.k3_kl(p.log(), q.log())).sum()
        assert enumerated.item() == pytest.approx(exact.item(), rel=1e-10)
        # torch's kl_div(input=log q, target=p) is KL(p || q) too: an independent reference.
        assert F.kl_div(q.log(), p, reduction="sum").item() == pytest.approx(exact.item(), rel=1e-10)
    # Monte Carlo: the mean over samples approaches the KL, with a smaller spread than k1 = log p - log q.
    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    x = torch.multinomial(p, 200_000, replacement=True, generator=gen)
    k3 = grpo.k3_kl(p.log()[x], q.log()[x])
    k1 = p.log()[x] - q.log()[x]
    exact = (p * (p / q).log()).sum().item()
    assert k3.mean().item() == pytest.approx(exact, abs=4 * k3.std().item() / math.sqrt(len(x)))
    assert k3.std() < k1.std()


def test_k3_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        grpo.k3_kl(torch.zeros(3), torch.zeros(4))
    with pytest.raises(TypeError):
        grpo.k3_kl([0.0], torch.zeros(1))


# --- the clipped loss -------------------------------------------------------------------------------

def loop_loss(logp, old, ref, adv, mask, clip_eps, beta, loss_type):
    """grpo_loss written token by token with math: per completion the mean (grpo) or a global sum."""
    B, T = len(logp), len(logp[0])
    per_completion, total = [], 0.0
    for b in range(B):
        terms = []
        for t in range(T):
            if not mask[b][t]:
                continue
            ratio = math.exp(logp[b][t] - old[b][t])
            clipped = min(max(ratio, 1 - clip_eps), 1 + clip_eps)
            surrogate = min(ratio * adv[b], clipped * adv[b])
            d = ref[b][t] - logp[b][t]
            terms.append(-(surrogate - beta * (math.exp(d) - d - 1)))
        total += sum(terms)
        per_completion.append(sum(terms) / max(len(terms), 1))
    return sum(per_completion) / B if loss_type == "grpo" else total / (B * T)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo"])
def test_loss_matches_a_loop(loss_type):
    gen = torch.Generator().manual_seed(2)
    for _ in range(10):
        B, T = 4, 6
        logp = -torch.rand(B, T, generator=gen, dtype=torch.float64) * 3
        old = logp + torch.randn(B, T, generator=gen, dtype=torch.float64) * 0.3  # some ratios outside the clip
        ref = logp + torch.randn(B, T, generator=gen, dtype=torch.float64) * 0.5
        adv = torch.randn(B, generator=gen, dtype=torch.float64)
        mask = (torch.rand(B, T, generator=gen) > 0.3).double()
        mask[0] = 0  # an empty completion must not make nan
        loss, stats = grpo.grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, beta=0.1, loss_type=loss_type)
        want = loop_loss(logp.tolist(), old.tolist(), ref.tolist(), adv.tolist(), mask.tolist(), 0.2, 0.1, loss_type)
        assert loss.item() == pytest.approx(want, rel=1e-10)
        assert 0 <= stats["clip_fraction"] <= 1 and stats["kl"] >= 0


def grad_of_loss(logp_value, old_value, adv, clip_eps=0.2, beta=0.0, ref_value=None):
    logp = torch.tensor([[logp_value]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[old_value]], dtype=torch.float64)
    ref = torch.tensor([[logp_value if ref_value is None else ref_value]], dtype=torch.float64)
    loss, _ = grpo.grpo_loss(logp, old, ref, torch.tensor([adv], dtype=torch.float64), torch.ones(1, 1),
                             clip_eps=clip_eps, beta=beta)
    loss.backward()
    return logp.grad.item()


def test_loss_gradient_signs_and_clipping():
    # On policy (ratio 1): the gradient with respect to log p is exactly -A (plain policy gradient):
    # a good answer (A > 0) is made more likely, a bad one less.
    assert grad_of_loss(-1.0, -1.0, 2.0) == pytest.approx(-2.0)
    assert grad_of_loss(-1.0, -1.0, -0.5) == pytest.approx(0.5)
    # Ratio above 1 + eps with A > 0: already pushed far enough, the clip removes the gradient.
    assert grad_of_loss(math.log(1.5), 0.0, 1.0) == 0.0
    # Ratio above 1 + eps with A < 0: the unclipped (worse) term is kept, so the gradient still pushes down.
    assert grad_of_loss(math.log(1.5), 0.0, -1.0) == pytest.approx(1.5)
    # Ratio below 1 - eps with A < 0: clipped, no gradient; with A > 0: keeps pulling up.
    assert grad_of_loss(math.log(0.5), 0.0, -1.0) == 0.0
    assert grad_of_loss(math.log(0.5), 0.0, 1.0) == pytest.approx(-0.5)
    # KL term alone (A = 0): a policy above the reference is pulled down, below it pulled up,
    # with gradient beta·(1 - p_ref/p) of the k3 estimate.
    beta = 0.5
    assert grad_of_loss(-1.0, -1.0, 0.0, beta=beta, ref_value=-2.0) == pytest.approx(beta * (1 - math.exp(-1)))
    assert grad_of_loss(-2.0, -2.0, 0.0, beta=beta, ref_value=-1.0) == pytest.approx(beta * (1 - math.exp(1)))


def test_masked_tokens_get_no_gradient():
    logp = torch.randn(2, 5, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float)
    loss, _ = grpo.grpo_loss(logp, logp.detach(), logp.detach() - 0.1, torch.tensor([1.0, -1.0]), mask)
    loss.backward()
    assert (logp.grad[0, 2:] == 0).all() and (logp.grad[0, :2] != 0).all()
    # Per-completion mean: each token of the short answer weighs 1/2 / B, of the long one 1/5 / B.
    assert logp.grad[0, 0].item() == pytest.approx(-1.0 / 2 / 2, rel=1e-4, abs=0.01)


@pytest.mark.parametrize("kwargs, error", [
    ({"advantages": torch.zeros(3)}, ValueError),
    ({"mask": torch.ones(2, 4)}, ValueError),
    ({"old_logprobs": [[0.0]]}, TypeError),
    ({"clip_eps": 0.0}, ValueError),
    ({"clip_eps": 1.5}, ValueError),
    ({"beta": -0.1}, ValueError),
    ({"loss_type": "dapo"}, ValueError),
])
def test_loss_bad_input(kwargs, error):
    args = {"logprobs": torch.zeros(2, 3), "old_logprobs": torch.zeros(2, 3), "ref_logprobs": torch.zeros(2, 3),
            "advantages": torch.zeros(2), "mask": torch.ones(2, 3)}
    args.update(kwargs)
    with pytest.raises(error):
        grpo.grpo_loss(**args)


# --- model-side helpers -----------------------------------------------------------------------------

def tiny_model(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=64, context_length=32, n_layer=1, n_head=2, d_model=16))


def test_token_logprobs_equal_cross_entropy():
    model = tiny_model()
    ids = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(3))
    got = grpo.token_logprobs(model, ids)
    want = -F.cross_entropy(model(ids[:, :-1]).reshape(-1, 64), ids[:, 1:].reshape(-1), reduction="none")
    assert got.shape == (3, 9)
    torch.testing.assert_close(got, want.reshape(3, 9))
    with pytest.raises(ValueError):
        grpo.token_logprobs(model, ids[:, :1])


def test_completion_mask_keeps_the_first_end_token():
    new = torch.tensor([[5, 9, 9, 9], [5, 6, 7, 8], [9, 9, 9, 9]])
    assert grpo.completion_mask(new, 9).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_default_reward():
    def check(task, reply):
        return reply.strip() == task
    assert grpo.default_reward("7", "7", True, check, 0.1) == pytest.approx(1.1)
    assert grpo.default_reward("7", " 7", False, check, 0.1) == 1.0
    assert grpo.default_reward("7", "8", True, check, 0.1) == pytest.approx(0.1)


def test_config_is_checked():
    with pytest.raises(ValueError, match="group_size"):
        grpo.train_grpo(tiny_model(), None, [object()], grpo.GRPOConfig(group_size=1))
    with pytest.raises(ValueError, match="steps"):
        grpo.train_grpo(tiny_model(), None, [object()], grpo.GRPOConfig(steps=0))
    with pytest.raises(ValueError, match="task"):
        grpo.train_grpo(tiny_model(), None, [], grpo.GRPOConfig())


# --- the loop, end to end on a tiny model --------------------------------------------------------

@pytest.mark.slow
def test_train_grpo_raises_a_checkable_reward_and_is_deterministic():
    from llm_lib import pipeline
    from llm_lib.sft import Task

    tok = pipeline.load("tokenizer")
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=len(tok.vocab), context_length=64, n_layer=1, n_head=2, d_model=32)
    tasks = [Task("Say a word", "A"), Task("Say something", "A")]

    def check(task, reply):  # a verifiable rule the untrained model meets about a fifth of the time
        return reply[:1].isupper()

    def run(steps):
        torch.manual_seed(0)
        model = GPT(config)
        cfg = grpo.GRPOConfig(steps=steps, prompts_per_step=2, group_size=8, max_new_tokens=2, lr=1e-2, beta=0.0,
                              epochs_per_batch=2, eval_every=0, seed=1)
        return grpo.train_grpo(model, tok, tasks, cfg, check=check, progress=False), model

    history, model = run(50)  # the rule is met ~20% of the time at first, ~100% by step 40
    first, last = sum(history["accuracy"][:8]) / 8, sum(history["accuracy"][-5:]) / 5
    assert last > first + 0.2, (first, last)
    assert all(k >= 0 for k in history["kl"])
    assert 0 < max(history["clip_fraction"]) <= 1  # the second update on a batch moves the ratio off 1
    again, _ = run(3)
    assert again["reward"] == history["reward"][:3] and again["loss"] == history["loss"][:3]
    assert grpo.accuracy(model, tok, tasks, check=check, max_new_tokens=2) in (0.0, 0.5, 1.0)


def test_group_html_marks_groups_without_signal():
    from llm_lib.grpo_viz import group_html
    from llm_lib.sft import Task

    task = Task("What is 2 plus 3?", "5", "add")
    row = {"reply": "<b>4</b>", "finished": True, "correct": False, "reward": 0.1, "advantage": 0.0, "dr_advantage": 0.0}
    page = group_html(task, [row, dict(row)])
    assert "teaches nothing" in page and "&lt;b&gt;4&lt;/b&gt;" in page  # replies are escaped
    mixed = group_html(task, [row, dict(row, reply="5", correct=True, reward=1.1, advantage=0.7, dr_advantage=0.5)])
    assert "1 of 2 right" in mixed and "teaches nothing" not in mixed


def test_group_explorer_snapshot_and_live_redraw():
    from llm_lib import pipeline
    from llm_lib.grpo_viz import group_explorer
    from llm_lib.sft import Task

    tok = pipeline.load("tokenizer")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tok.vocab), context_length=64, n_layer=1, n_head=2, d_model=16))
    tasks = [Task("What is 2 plus 3?", "5", "add"), Task("What is 1 plus 1?", "2", "add")]
    explorer = group_explorer({"tiny": model}, tok, tasks, group_size=4)
    page = explorer.static_html()
    assert explorer._snapshot_class in page and "Static snapshot" in page and "2 plus 3" in page
    assert explorer._snapshot_class in explorer.widget.children[-1].value  # the live widget hides the snapshot
    explorer.task.value = 1  # a new prompt redraws the live view, not the book's snapshot
    assert "1 plus 1" in explorer.view.value and "1 plus 1" not in page
    with pytest.raises(ValueError, match="at least one model"):
        group_explorer({}, tok, tasks)

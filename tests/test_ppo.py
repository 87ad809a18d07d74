"""llm_lib.ppo: GAE against its defining sum, the clipped objective against a case analysis, the KL
estimators against the exact KL, and the rollout's masking."""
import itertools
import math

import pytest
import torch

from llm_lib.ppo import (gae, kl_penalty, masked_mean, per_token_rewards, ppo_clip_loss, token_logprobs,
                         value_loss, whiten)


def gae_by_definition(rewards, values, gamma, lam):
    """A_t = sum_{l>=0} (gamma·lam)^l · delta_{t+l}, delta_t = r_t + gamma·V_{t+1} - V_t, V_T = 0:
    the sum written out, one row of floats at a time (no recursion)."""
    T = len(rewards)
    v = list(values) + [0.0]
    deltas = [rewards[t] + gamma * v[t + 1] - v[t] for t in range(T)]
    return [sum((gamma * lam) ** l * deltas[t + l] for l in range(T - t)) for t in range(T)]


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0), (0.5, 0.3)])
def test_gae_equals_the_sum_of_discounted_td_errors(gamma, lam):
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(4, 7, generator=g, dtype=torch.float64), torch.randn(4, 7, generator=g, dtype=torch.float64)
    adv, ret = gae(rewards, values, gamma, lam)
    for b in range(4):
        expected = gae_by_definition(rewards[b].tolist(), values[b].tolist(), gamma, lam)
        torch.testing.assert_close(adv[b], torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(ret, adv + values)


def test_gae_lambda_one_is_monte_carlo_return_minus_value():
    r, v = torch.randn(1, 6, dtype=torch.float64), torch.randn(1, 6, dtype=torch.float64)
    adv, ret = gae(r, v, gamma=0.9, lam=1.0)
    mc = torch.tensor([[sum(0.9 ** (k - t) * r[0, k].item() for k in range(t, 6)) for t in range(6)]], dtype=torch.float64)
    torch.testing.assert_close(ret, mc)
    torch.testing.assert_close(adv, mc - v)


def test_gae_with_a_mask_equals_gae_on_the_reply_alone():
    g = torch.Generator().manual_seed(1)
    r, v = torch.randn(2, 9, generator=g, dtype=torch.float64), torch.randn(2, 9, generator=g, dtype=torch.float64)
    mask = torch.zeros(2, 9)
    mask[0, 3:7] = 1  # prompt, reply of 4 tokens, padding
    mask[1, 2:9] = 1
    adv, ret = gae(r, v, 1.0, 0.9, mask)
    for b, (s, e) in enumerate([(3, 7), (2, 9)]):
        alone, alone_ret = gae(r[b:b + 1, s:e], v[b:b + 1, s:e], 1.0, 0.9)
        torch.testing.assert_close(adv[b, s:e], alone[0])
        torch.testing.assert_close(ret[b, s:e], alone_ret[0])
        assert (adv[b][mask[b] == 0] == 0).all() and (ret[b][mask[b] == 0] == 0).all()


def test_gae_rejects_bad_input():
    with pytest.raises(ValueError):
        gae(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        gae(torch.zeros(2, 3), torch.zeros(2, 3), gamma=1.5)
    with pytest.raises(ValueError):
        gae(torch.zeros(2, 3), torch.zeros(2, 3), mask=torch.ones(3))


def clip_objective_by_cases(ratio, adv, eps):
    """PPO's per-token objective from the case analysis in Schulman et al. (2017), figure 1:
    A > 0: the gain stops growing once ratio > 1 + eps; A < 0: once ratio < 1 - eps; else r·A."""
    if adv > 0 and ratio > 1 + eps:
        return (1 + eps) * adv
    if adv < 0 and ratio < 1 - eps:
        return (1 - eps) * adv
    return ratio * adv


def test_ppo_clip_loss_matches_the_case_analysis():
    eps = 0.2
    ratios = [0.5, 0.79, 0.8, 0.95, 1.0, 1.1, 1.2, 1.21, 3.0]
    advs = [-2.0, -0.5, 0.0, 0.7, 1.5]
    cases = list(itertools.product(ratios, advs))
    r = torch.tensor([c[0] for c in cases], dtype=torch.float64)
    a = torch.tensor([c[1] for c in cases], dtype=torch.float64)
    old = torch.randn(len(cases), dtype=torch.float64)
    loss = ppo_clip_loss(old + torch.log(r), old, a, eps)
    expected = -sum(clip_objective_by_cases(ri, ai, eps) for ri, ai in cases) / len(cases)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_ppo_clip_loss_gradient_vanishes_only_where_clipped():
    eps = 0.2
    old = torch.zeros(4)
    logp = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5])).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    ppo_clip_loss(logp, old, adv, eps).backward()
    # ratio 1.5 with A > 0 and ratio 0.5 with A < 0 are clipped (no gradient); the other two are not.
    assert logp.grad[0] == 0 and logp.grad[3] == 0
    torch.testing.assert_close(logp.grad[[1, 2]], torch.tensor([1.5, -0.5]) / 4)  # -d(r·A)/dlogp = -r·A / N


def test_ppo_clip_loss_mask_and_errors():
    logp, old, adv = torch.randn(2, 5), torch.randn(2, 5), torch.randn(2, 5)
    mask = torch.tensor([[0, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    keep = mask.bool()
    torch.testing.assert_close(ppo_clip_loss(logp, old, adv, 0.2, mask), ppo_clip_loss(logp[keep], old[keep], adv[keep], 0.2))
    with pytest.raises(ValueError):
        ppo_clip_loss(logp, old, adv[:, :4])
    with pytest.raises(ValueError):
        ppo_clip_loss(logp, old, adv, clip_eps=0.0)
    with pytest.raises(ValueError):
        ppo_clip_loss(logp, old, adv, 0.2, torch.zeros(2, 5))  # an all-empty reply batch


def test_value_loss_clipping():
    old, ret = torch.zeros(3), torch.tensor([1.0, -1.0, 0.1])
    v = torch.tensor([1.0, 0.5, 0.1])
    # by hand: clipped values 0.2, 0.2, 0.1 -> errors max(0, 0.64), max(2.25, 1.44), max(0, 0)
    assert value_loss(v, old, ret, 0.2).item() == pytest.approx(0.5 * (0.64 + 2.25 + 0) / 3)
    assert value_loss(v, old, ret, None).item() == pytest.approx(0.5 * (0 + 2.25 + 0) / 3)


def test_kl_estimators_average_to_the_exact_kl():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    q = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    exact = (p * (p.log() - q.log())).sum()
    tokens = torch.arange(6, dtype=torch.float64)
    # Expectations under p, computed exactly by summing over the 6 tokens instead of sampling.
    for kind in ("k1", "k3"):
        per_token = kl_penalty(p.log(), q.log(), kind)
        torch.testing.assert_close((p * per_token).sum(), exact)
    assert (kl_penalty(p.log(), q.log(), "k3") >= 0).all()
    assert tokens.numel() == 6
    with pytest.raises(ValueError):
        kl_penalty(p.log(), q.log(), "k2")


def test_per_token_rewards_put_the_score_on_the_last_reply_token():
    logp = torch.tensor([[0.0, -1.0, -2.0, -0.5, 0.0], [0.0, -1.0, 0.0, 0.0, 0.0]])
    ref = torch.tensor([[0.0, -1.5, -1.0, -0.5, 0.0], [0.0, -3.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 0, 0, 0]])
    out = per_token_rewards(torch.tensor([2.0, -1.0]), logp, ref, mask, kl_coef=0.1)
    expected = torch.tensor([[0.0, -0.05, 0.1, 2.0, 0.0], [0.0, -1.0 - 0.2, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(out, expected)
    # A row without reply tokens gets nothing.
    mask[1] = 0
    assert per_token_rewards(torch.tensor([2.0, -1.0]), logp, ref, mask, 0.1)[1].abs().sum() == 0
    with pytest.raises(ValueError):
        per_token_rewards(torch.tensor([1.0]), logp, ref, mask, 0.1)


def test_token_logprobs_and_masked_helpers():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 10, generator=g)
    targets = torch.tensor([[1, 2, -100, 3], [-100, -100, 9, 0]])
    out = token_logprobs(logits, targets)
    for b in range(2):
        for t in range(4):
            want = 0.0 if targets[b, t] == -100 else torch.log_softmax(logits[b, t], -1)[targets[b, t]].item()
            assert out[b, t].item() == pytest.approx(want, abs=1e-6)
    with pytest.raises(ValueError):
        token_logprobs(logits, torch.tensor([[1, 2, 3, 10], [0, 0, 0, 0]]))  # 10 is not in the vocabulary
    with pytest.raises(ValueError):
        token_logprobs(logits, targets[:, :3])
    with pytest.raises(TypeError):
        token_logprobs(logits, targets.float())
    x, m = torch.tensor([1.0, 2.0, 9.0]), torch.tensor([1, 1, 0])
    assert masked_mean(x, m).item() == 1.5
    w = whiten(torch.tensor([1.0, 2.0, 3.0, 100.0]), torch.tensor([1, 1, 1, 0]))
    assert w[3] == 0 and abs(w[:3].mean().item()) < 1e-6
    assert math.isclose(w[:3].pow(2).mean().item(), 1.0, rel_tol=1e-5)

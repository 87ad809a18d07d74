"""llm_lib.reward: the Bradley-Terry loss against its probability model, the reward model's masking
and padding, and the preference data's rule."""
import copy
import math

import pytest
import torch

from llm_lib.model import GPT, GPTConfig
from llm_lib.reward import (RewardModel, bradley_terry_loss, gpt_hidden_states, make_preference_pairs,
                            pad_right, pairwise_accuracy, rule_score, train_reward_model, win_rate)
from llm_lib.sft import Task, is_correct, make_tasks


def tiny_gpt(seed=0, vocab_size=4096):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, context_length=64, n_layer=1, n_head=2, d_model=16))


def test_bradley_terry_loss_is_the_negative_log_likelihood_of_the_preferences():
    g = torch.Generator().manual_seed(0)
    rc, rr = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
    # P(chosen preferred) = e^rc / (e^rc + e^rr): Bradley-Terry's "strengths" e^r, no sigmoid in sight.
    p = torch.exp(rc) / (torch.exp(rc) + torch.exp(rr))
    torch.testing.assert_close(bradley_terry_loss(rc, rr), -torch.log(p).mean())


def test_bradley_terry_loss_is_stable_and_symmetric():
    big = torch.tensor([1000.0, -1000.0])
    loss = bradley_terry_loss(big, -big)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, torch.tensor(1000.0))  # mean of 0 and 2000
    torch.testing.assert_close(bradley_terry_loss(torch.zeros(3), torch.zeros(3)), torch.tensor(math.log(2)))
    # Only the difference matters.
    r = torch.randn(5)
    torch.testing.assert_close(bradley_terry_loss(r + 3, r + 1), bradley_terry_loss(torch.full((5,), 2.0), torch.zeros(5)))


def test_bradley_terry_gradient_is_sigmoid_of_minus_margin():
    rc, rr = torch.randn(7, requires_grad=True), torch.randn(7, requires_grad=True)
    bradley_terry_loss(rc, rr).backward()
    expected = -torch.sigmoid(-(rc - rr)).detach() / 7  # d/d rc of -log sigmoid(rc - rr), averaged
    torch.testing.assert_close(rc.grad, expected)
    torch.testing.assert_close(rr.grad, -expected)


@pytest.mark.parametrize("bad, error", [
    ((torch.zeros(3), torch.zeros(4)), ValueError),
    ((torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long)), TypeError),
    (([0.0], [1.0]), TypeError),
    ((torch.zeros(0), torch.zeros(0)), ValueError),
])
def test_bradley_terry_loss_rejects_bad_input(bad, error):
    with pytest.raises(error):
        bradley_terry_loss(*bad)


def test_pairwise_accuracy_and_win_rate():
    assert pairwise_accuracy(torch.tensor([2.0, 0.0, 1.0, 1.0]), torch.tensor([1.0, 1.0, 0.0, 1.0])) == 0.5
    assert win_rate([3.0, 1.0, 1.0, 0.0], [1.0, 1.0, 2.0, 0.0]) == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    with pytest.raises(ValueError):
        win_rate([1.0], [1.0, 2.0])


def test_gpt_hidden_states_feed_the_lm_head():
    gpt = tiny_gpt()
    idx = torch.randint(0, 4096, (2, 9))
    torch.testing.assert_close(gpt.lm_head(gpt_hidden_states(gpt, idx)), gpt(idx))


def test_reward_model_scores_the_last_real_token_and_ignores_padding():
    rm = RewardModel(tiny_gpt())
    torch.nn.init.normal_(rm.head.weight)
    a, b = [5, 6, 7, 8], [9, 10]
    idx, lengths = pad_right([a, b], pad_id=0)
    assert idx.tolist() == [[5, 6, 7, 8], [9, 10, 0, 0]] and lengths.tolist() == [4, 2]
    batched = rm.score(idx, lengths)
    alone = torch.stack([rm(torch.tensor([a]))[0, -1], rm(torch.tensor([b]))[0, -1]])
    torch.testing.assert_close(batched, alone)
    # Different padding values change nothing: causal attention never reads past the last token.
    idx2, _ = pad_right([a, b], pad_id=4000)
    torch.testing.assert_close(rm.score(idx2, lengths), batched)
    with pytest.raises(ValueError):
        rm.score(idx, torch.tensor([4, 0]))
    with pytest.raises(ValueError):
        rm.score(idx, torch.tensor([5, 2]))
    with pytest.raises(ValueError):
        pad_right([[1], []], 0)


def test_reward_model_starts_neutral_and_keeps_its_trunk():
    gpt = tiny_gpt()
    rm = RewardModel(copy.deepcopy(gpt))
    assert torch.equal(rm(torch.randint(0, 4096, (3, 5))), torch.zeros(3, 5))
    assert rm.trunk is not gpt


def test_rule_score_and_pairs_follow_the_rule():
    t = Task("What is 3 plus 4?", "7", "add")
    assert rule_score(t, "7") > rule_score(t, "7, and so forth, my good lord") > rule_score(t, "9")
    tasks = make_tasks(60, seed=1)
    pairs = make_preference_pairs(tasks, seed=1)
    assert len(pairs) == 60 and {p.kind for p in pairs} == {"wrong", "rambling", "evasive"}
    for task, p in zip(tasks, pairs):
        assert p.prompt == task.prompt and p.chosen == task.answer
        assert is_correct(task, p.chosen)
        assert rule_score(task, p.chosen) > rule_score(task, p.rejected)
        if p.kind == "wrong":
            assert not is_correct(task, p.rejected)
    assert make_preference_pairs(tasks, seed=1) == pairs  # deterministic
    with pytest.raises(ValueError):
        make_preference_pairs([], seed=0)
    with pytest.raises(ValueError):
        make_preference_pairs(tasks, kinds=("nonsense",))


def test_reward_model_training_learns_a_separable_preference():
    # Real tokenizer, tiny trunk: "evasive" replies are easy to tell from answers.
    from llm_lib import pipeline

    tok = pipeline.load("tokenizer")
    rm = RewardModel(tiny_gpt())
    pairs = make_preference_pairs(make_tasks(64, seed=0), seed=0, kinds=("evasive",))
    history = train_reward_model(rm, tok, pairs, steps=40, batch_size=16, lr=3e-3, progress=False)
    assert sum(history["loss"][-5:]) / 5 < history["loss"][0]
    assert history["loss"][0] == pytest.approx(math.log(2))  # zero head: every pair starts tied

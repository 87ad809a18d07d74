"""llm_lib.dpo: the three losses against TRL's published formulas (re-derived here, TRL is not needed),
DPO as Bradley-Terry on implicit rewards, and the response masking of sequence log-probs."""
import math

import pytest
import torch

from llm_lib.dpo import DPOConfig, dpo_loss, implicit_reward, pair_batch, policy_logprobs, sequence_logprob, train_dpo
from llm_lib.model import GPT, GPTConfig
from llm_lib.reward import PreferencePair
from llm_lib.sft import format_chat


def random_logps(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [-torch.rand(n, generator=g, dtype=torch.float64) * 20 for _ in range(4)]


def trl_losses(pc, pr, rc, rr, beta, loss_type):
    """TRL DPOTrainer.dpo_loss, as its documentation and source write it:
    logits = pi_logratios - ref_logratios, pi_logratios = chosen - rejected (policy), same for ref;
    sigmoid: -logsigmoid(beta·logits); ipo: (logits - 1/(2·beta))^2; hinge: relu(1 - beta·logits)."""
    logits = (pc - pr) - (rc - rr)
    if loss_type == "sigmoid":
        return -torch.nn.functional.logsigmoid(beta * logits)
    if loss_type == "ipo":
        return (logits - 1 / (2 * beta)) ** 2
    return torch.relu(1 - beta * logits)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
@pytest.mark.parametrize("beta", [0.01, 0.1, 0.5, 2.0])
def test_dpo_loss_equals_trl_formulas(loss_type, beta):
    pc, pr, rc, rr = random_logps(seed=int(beta * 100))
    losses, c, r = dpo_loss(pc, pr, rc, rr, beta, loss_type)
    torch.testing.assert_close(losses, trl_losses(pc, pr, rc, rr, beta, loss_type))
    torch.testing.assert_close(c, beta * (pc - rc))
    torch.testing.assert_close(r, beta * (pr - rr))


def test_dpo_sigmoid_is_bradley_terry_on_implicit_rewards():
    pc, pr, rc, rr = random_logps(seed=3)
    beta = 0.3
    # r(y) = beta · log(pi(y) / pi_ref(y)); P(chosen > rejected) = e^{r_c} / (e^{r_c} + e^{r_r}).
    r_c = beta * torch.log(torch.exp(pc) / torch.exp(rc))
    r_r = beta * torch.log(torch.exp(pr) / torch.exp(rr))
    p = torch.exp(r_c) / (torch.exp(r_c) + torch.exp(r_r))
    losses, _, _ = dpo_loss(pc, pr, rc, rr, beta)
    torch.testing.assert_close(losses, -torch.log(p))


def test_dpo_gradient_weights_pairs_by_how_wrong_the_implicit_reward_is():
    pc, pr, rc, rr = random_logps(n=5, seed=4)
    pc.requires_grad_(True)
    beta = 0.5
    losses, c, r = dpo_loss(pc, pr, rc, rr, beta)
    losses.sum().backward()
    # d loss / d log pi(y_w) = -beta · sigmoid(r_rejected - r_chosen) (Rafailov et al., eq. 7)
    torch.testing.assert_close(pc.grad, -beta * torch.sigmoid(r - c))
    assert not c.requires_grad and not r.requires_grad  # rewards are for logging only


def test_dpo_loss_at_the_reference_and_ipo_target():
    z = torch.zeros(3)
    for loss_type, value in (("sigmoid", math.log(2)), ("ipo", (1 / 0.2) ** 2), ("hinge", 1.0)):
        losses, _, _ = dpo_loss(z, z, z, z, 0.1, loss_type)
        torch.testing.assert_close(losses, torch.full((3,), value))
    # IPO is minimal (0) exactly when the log-ratio margin is 1 / (2 beta), not at infinity.
    beta = 0.25
    losses, _, _ = dpo_loss(torch.tensor([1 / (2 * beta)]), torch.zeros(1), torch.zeros(1), torch.zeros(1), beta, "ipo")
    assert losses.item() == 0.0


@pytest.mark.parametrize("args, kwargs, error", [
    ((torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(4)), {}, ValueError),
    ((torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(3)), {"loss_type": "kto"}, ValueError),
    ((torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(3)), {"beta": 0.0}, ValueError),
    ((torch.zeros(3, dtype=torch.long),) * 4, {}, TypeError),
    (([0.0],) * 4, {}, TypeError),
])
def test_dpo_loss_rejects_bad_input(args, kwargs, error):
    with pytest.raises(error):
        dpo_loss(*args, **kwargs)


def test_implicit_reward():
    torch.testing.assert_close(implicit_reward(torch.tensor([-3.0]), torch.tensor([-5.0]), 0.1), torch.tensor([0.2]))
    with pytest.raises(ValueError):
        implicit_reward(torch.zeros(1), torch.zeros(1), -1.0)


def test_sequence_logprob_sums_only_labelled_tokens():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g)
    labels = torch.tensor([[-100, -100, 1, 2, 3], [-100, 4, -100, -100, -100], [-100] * 5])
    lp = torch.log_softmax(logits, -1)
    expected = torch.stack([lp[0, 2, 1] + lp[0, 3, 2] + lp[0, 4, 3], lp[1, 1, 4], torch.tensor(0.0)])
    torch.testing.assert_close(sequence_logprob(logits, labels), expected)
    torch.testing.assert_close(sequence_logprob(logits, labels, average=True),
                               expected / torch.tensor([3.0, 1.0, 1.0]))
    with pytest.raises(ValueError):
        sequence_logprob(logits, labels[:, :4])
    with pytest.raises(ValueError):
        sequence_logprob(logits, torch.full((3, 5), 7))  # token 7 is outside a vocabulary of 7


@pytest.fixture(scope="module")
def tok():
    from llm_lib import pipeline

    return pipeline.load("tokenizer")


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=4096, context_length=64, n_layer=1, n_head=2, d_model=16)).eval()


@torch.no_grad()
def full_logprob(model, ids):
    """log p(ids[1:] | ids[0]) by the chain rule, one sequence, no masking."""
    x = torch.tensor([ids])
    return torch.log_softmax(model(x[:, :-1]), -1)[0].gather(-1, x[0, 1:, None]).sum().item()


def test_response_logprob_is_log_p_of_full_minus_log_p_of_prompt(tok):
    model = tiny_gpt()
    prompts, responses = ["What is 3 plus 4?", "Hi", "Repeat after me: king queen"], ["7", "Hello there, friend!", ""]
    inputs, labels = pair_batch(tok, prompts, responses, 64)
    got = policy_logprobs(model, inputs, labels)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        whole = full_logprob(model, tok.encode(format_chat(p, r)))
        prompt_only = full_logprob(model, tok.encode(format_chat(p)))
        assert got[b].item() == pytest.approx(whole - prompt_only, abs=1e-4)
    # The empty response still has one token to predict: the closing <|end|>.
    assert (labels[2] != -100).sum() == 1


def test_pair_batch_truncates_the_response_and_pads_with_ignored_labels(tok):
    prompt, long = "Hi", "a very long answer " * 20
    n_prompt = len(tok.encode(format_chat(prompt)))
    inputs, labels = pair_batch(tok, [prompt, prompt], [long, "ok"], context_length=n_prompt + 3)
    assert inputs.shape == (2, n_prompt + 3)
    assert (labels[0] != -100).sum() == 4  # only the first 4 response tokens survive the cut
    assert (labels[0, :n_prompt - 1] == -100).all()
    n_ok = len(tok.encode(format_chat(prompt, "ok"))) - 1
    assert (labels[1, n_ok:] == -100).all() and (labels[1, n_prompt - 1:n_ok] != -100).all()
    with pytest.raises(ValueError):
        pair_batch(tok, [prompt], [long, "ok"], 64)
    with pytest.raises(ValueError):
        pair_batch(tok, ["<|end|>"], ["x"], 64)  # a special token in the text would break the template


def test_train_dpo_raises_the_margin(tok):
    policy, ref = tiny_gpt(1), tiny_gpt(1)
    pairs = [PreferencePair(f"What is {a} plus 1?", str(a + 1), "I know not.", "evasive") for a in range(8)]
    history = train_dpo(policy, ref, tok, pairs, DPOConfig(steps=15, batch_size=8, lr=3e-3, progress=False))
    assert history["margin"][0] == pytest.approx(0.0, abs=1e-6)  # policy == reference at the start
    assert history["margin"][-1] > 0 and history["loss"][-1] < math.log(2)

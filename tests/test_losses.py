"""llm_lib.losses against torch.nn.functional (softmax, log_softmax, logsumexp, cross_entropy)."""

import doctest
import math

import pytest
import torch
import torch.nn.functional as F

from llm_lib import losses
from llm_lib.losses import bits_per_byte, cross_entropy, log_softmax, logsumexp, perplexity, softmax


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_docstring_examples_run():
    result = doctest.testmod(losses, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 5


@pytest.mark.parametrize("shape,dim", [((7,), -1), ((4, 11), -1), ((4, 11), 0), ((2, 3, 5), 1)])
def test_softmax_family_matches_torch(shape, dim):
    x = torch.randn(shape, generator=gen(0)) * 5
    torch.testing.assert_close(softmax(x, dim), torch.softmax(x, dim))
    torch.testing.assert_close(log_softmax(x, dim), torch.log_softmax(x, dim))
    torch.testing.assert_close(logsumexp(x, dim), torch.logsumexp(x, dim))
    torch.testing.assert_close(logsumexp(x, dim, keepdim=True), torch.logsumexp(x, dim, keepdim=True))


def test_softmax_family_stable_for_huge_and_minus_inf_scores():
    x = torch.randn(3, 8, generator=gen(1)) * 1000  # exp overflows float32 beyond ~88
    for ours, ref in ((softmax, torch.softmax), (log_softmax, torch.log_softmax), (logsumexp, torch.logsumexp)):
        out = ours(x, -1)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, ref(x, -1))
    masked = torch.tensor([[0.0, -math.inf, 1.0], [-math.inf, -math.inf, -math.inf]])
    torch.testing.assert_close(logsumexp(masked, -1), torch.logsumexp(masked, -1))  # [finite, -inf]
    torch.testing.assert_close(softmax(masked[:1], -1), torch.softmax(masked[:1], -1))  # exp(-inf) = 0


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(10, 7), (2, 5, 7)])
@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_cross_entropy_matches_torch(reduction, shape, scale):
    g = gen(2)
    logits = torch.randn(shape, generator=g) * scale
    targets = torch.randint(0, shape[-1], shape[:-1], generator=g)
    targets[..., ::3] = -100  # some positions ignored
    ours = cross_entropy(logits, targets, reduction=reduction)
    # torch wants classes in dim 1: (N, V, d1, ...); ours has them last.
    ref = F.cross_entropy(logits.movedim(-1, 1), targets, reduction=reduction)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, ref)


def test_cross_entropy_custom_ignore_index_and_int32_targets():
    g = gen(3)
    logits = torch.randn(12, 5, generator=g)
    targets = torch.randint(0, 5, (12,), generator=g)
    ours = cross_entropy(logits, targets.int(), ignore_index=2)  # id 2 is ignored, not out of range
    torch.testing.assert_close(ours, F.cross_entropy(logits, targets, ignore_index=2))


def test_cross_entropy_all_ignored_matches_torch():
    logits = torch.randn(4, 6, generator=gen(4), requires_grad=True)
    targets = torch.full((4,), -100)
    ours = cross_entropy(logits, targets)
    assert torch.isnan(ours) and torch.isnan(F.cross_entropy(logits, targets))  # 0 positions / 0
    ours.backward()
    assert torch.equal(logits.grad, torch.zeros(4, 6))  # same as torch: no gradient, not nan
    assert cross_entropy(logits, targets, reduction="sum").item() == 0.0
    assert torch.equal(cross_entropy(logits, targets, reduction="none"), torch.zeros(4))


def test_cross_entropy_gradient_matches_torch_and_gradcheck():
    g = gen(5)
    logits = torch.randn(2, 3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 6, (2, 3), generator=g)
    targets[0, 1] = -100
    for reduction in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(lambda x: cross_entropy(x, targets, reduction=reduction), (logits,))
    assert torch.autograd.gradcheck(lambda x: log_softmax(x, 1), (logits,))
    assert torch.autograd.gradcheck(lambda x: softmax(x, -1), (logits,))
    ours, = torch.autograd.grad(cross_entropy(logits * 1000, targets), logits)
    ref, = torch.autograd.grad(F.cross_entropy((logits * 1000).movedim(-1, 1), targets), logits)
    torch.testing.assert_close(ours, ref)


def test_cross_entropy_bad_input():
    logits = torch.randn(2, 3, 5)
    with pytest.raises(TypeError, match="integer token ids"):
        cross_entropy(logits, torch.zeros(2, 3))
    with pytest.raises(TypeError, match="floating-point"):
        cross_entropy(torch.zeros(2, 3, 5, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"logits \(2, 3, 5\) need targets of shape \(2, 3\).*got targets \(6,\)"):
        cross_entropy(logits, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 5\).*got \[5\]"):
        cross_entropy(logits, torch.tensor([[0, 1, 2], [3, 4, 5]]))
    with pytest.raises(ValueError, match=r"got \[-1\]"):
        cross_entropy(logits, torch.tensor([[0, 1, 2], [3, 4, -1]]))
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(logits, torch.zeros(2, 3, dtype=torch.long), reduction="avg")


def test_perplexity():
    g = gen(6)
    logits = torch.randn(3, 4, 9, generator=g)
    targets = torch.randint(0, 9, (3, 4), generator=g)
    loss = F.cross_entropy(logits.reshape(-1, 9), targets.reshape(-1))
    torch.testing.assert_close(perplexity(logits, targets), torch.exp(loss))
    torch.testing.assert_close(perplexity(loss), torch.exp(loss))
    assert perplexity(math.log(9.0)) == pytest.approx(9.0)  # uniform over 9 tokens
    assert perplexity(torch.zeros(9, 9), torch.zeros(9, dtype=torch.long)).item() == pytest.approx(9.0)
    with pytest.raises(ValueError, match=r"shape \(3, 4, 9\) and no targets"):
        perplexity(logits)
    with pytest.raises(TypeError):
        perplexity("2.3")


def test_bits_per_byte():
    # Uniform over 256 byte values with one token per byte: exactly 8 bits per byte.
    assert bits_per_byte(math.log(256), n_tokens=100, n_bytes=100) == pytest.approx(8.0)
    # Same text, two tokenizers: same total nats -> same bpb though per-token loss differs.
    text = "héllo wörld, naïve café " * 10
    n_bytes = len(text.encode("utf-8"))
    total_nats = 123.4
    a = bits_per_byte(total_nats / 200, n_tokens=200, n_bytes=n_bytes)
    b = bits_per_byte(total_nats / 50, n_tokens=50, n_bytes=n_bytes)
    assert a == pytest.approx(b) == pytest.approx(total_nats / math.log(2) / n_bytes)
    # From a model's loss: mean cross-entropy over the kept targets, as a tensor.
    g = gen(7)
    logits, targets = torch.randn(20, 30, generator=g), torch.randint(0, 30, (20,), generator=g)
    loss = cross_entropy(logits, targets)
    expected = F.cross_entropy(logits, targets, reduction="sum") / (math.log(2) * 37)
    torch.testing.assert_close(bits_per_byte(loss, 20, 37), expected)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_bytes must be a positive int"):
            bits_per_byte(1.0, 10, bad)
    with pytest.raises(ValueError, match="n_tokens"):
        bits_per_byte(1.0, 0, 10)
    with pytest.raises(ValueError, match="scalar"):
        bits_per_byte(torch.ones(3), 3, 10)

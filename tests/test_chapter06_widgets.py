"""Chapter 6's helpers in llm_lib.losses_viz: the numbers the loss explorer draws must be the ones
llm_lib.losses computes (loss = -ln p, gradient on the logits = softmax - one-hot), and the explorer
must render a static snapshot for the built book.
"""
import math

import pytest
import torch

from llm_lib.display import figure_png
from llm_lib.losses_viz import LossExplorer, loss_and_gradient, loss_figure, spread_probability


def test_spread_probability_gives_p_to_the_first_token_and_shares_the_rest():
    probs = spread_probability(0.25, [4, 3, 2, 1])
    assert probs == pytest.approx([0.25, 0.3, 0.225, 0.15, 0.075])
    assert sum(probs) == pytest.approx(1.0)
    assert spread_probability(1.0, [1, 1]) == [1.0, 0.0, 0.0]
    for bad_p in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="probability of the correct token"):
            spread_probability(bad_p, [1])
    with pytest.raises(ValueError, match="positive numbers"):
        spread_probability(0.5, [1, 0])


@pytest.mark.parametrize("p", [0.005, 0.25, 0.9, 1.0])
def test_loss_and_gradient_match_the_formulas_and_torch(p):
    probs = spread_probability(p, [4, 3, 2, 1])
    loss, grad = loss_and_gradient(probs, target=0)
    assert loss == pytest.approx(-math.log(p), abs=1e-12)
    expected = torch.tensor(probs, dtype=torch.float64) - torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64)
    assert torch.allclose(torch.tensor(grad, dtype=torch.float64), expected, atol=1e-12)
    if p < 1:  # torch's fused loss, from logits whose softmax is probs, agrees
        logits = torch.log(torch.tensor(probs, dtype=torch.float64)).requires_grad_(True)
        torch_loss = torch.nn.functional.cross_entropy(logits[None], torch.tensor([0]))
        torch_loss.backward()
        assert loss == pytest.approx(torch_loss.item(), abs=1e-12)
        assert torch.allclose(torch.tensor(grad, dtype=torch.float64), logits.grad, atol=1e-12)


def test_loss_and_gradient_refuses_a_bad_target():
    with pytest.raises(ValueError, match="target"):
        loss_and_gradient([0.5, 0.5], target=2)


def test_figure_and_explorer_render():
    png = figure_png(loss_figure(0.3))
    assert png.startswith(b"\x89PNG")
    explorer = LossExplorer(p=0.3)
    snapshot = explorer.static_html()
    assert "data:image/png;base64," in snapshot and explorer._snapshot_class in snapshot
    assert "1.204 nats" in snapshot  # -ln 0.3
    explorer.slider.value = 0.5
    assert "0.693 nats" in explorer.readout.value and bytes(explorer.image.value).startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="one weight per wrong token"):
        LossExplorer(p=0.3, tokens=("a", "b"), weights=(1.0, 2.0))

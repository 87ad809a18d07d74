"""Chapter 8's helpers in llm_lib.sampling_viz: the distribution the explorer draws must be the one
llm_lib.sampling.sample_next samples from, and the explorer must render a static snapshot for the book.
"""
import html
import math

import pytest
import torch

from llm_lib.model import GPT, GPTConfig
from llm_lib.sampling import generate, sample_next
from llm_lib.display import figure_png
from llm_lib.sampling_viz import SamplingExplorer, distribution_figure, entropy_nats, filtered_probs, token_label
from llm_lib.tokenizer import BPETokenizer


def test_filtered_probs_is_what_sample_next_draws_from():
    logits = torch.randn(40, generator=torch.Generator().manual_seed(0)) * 2
    probs = filtered_probs(logits, temperature=0.7, top_k=10, top_p=0.8)
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-6)
    kept = probs > 0
    assert 1 <= kept.sum() <= 10
    # Many seeded draws from sample_next land only on kept tokens, with frequencies close to probs.
    draws = torch.stack([sample_next(logits[None], 0.7, 10, 0.8, torch.Generator().manual_seed(s))
                         for s in range(800)]).flatten()
    assert kept[draws].all()
    freq = torch.bincount(draws, minlength=40).float() / len(draws)
    assert torch.allclose(freq, probs, atol=0.06)
    assert torch.equal(filtered_probs(logits, temperature=0), torch.nn.functional.one_hot(logits.argmax(), 40).float())
    assert torch.allclose(filtered_probs(logits), torch.softmax(logits, -1))
    with pytest.raises(ValueError, match="temperature"):
        filtered_probs(logits, temperature=-1)
    with pytest.raises(ValueError, match="one row"):
        filtered_probs(logits[None])


def test_entropy_nats():
    assert entropy_nats(torch.ones(4) / 4) == pytest.approx(math.log(4))
    assert entropy_nats(torch.tensor([1.0, 0.0, 0.0])) == 0.0


@pytest.fixture(scope="module")
def tiny():
    tok = BPETokenizer.train("the cat sat on the mat. the dog sat on the log.\n" * 20, 300)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tok.vocab), context_length=32, n_layer=1, n_head=2, d_model=16)).eval()
    return model, tok


def test_figure_and_explorer_render(tiny):
    model, tok = tiny
    assert token_label(tok, tok.encode(" the")[0]) == "\u00b7the"
    logits = torch.randn(len(tok.vocab))
    assert figure_png(distribution_figure(logits, lambda i: str(i), 0.5, 5, 0.9)).startswith(b"\x89PNG")
    explorer = SamplingExplorer(model, tok, "the cat", temperature=0.8, top_k=5, seed=3, n_new=8)
    snapshot = explorer.static_html()
    assert "data:image/png;base64," in snapshot and explorer._snapshot_class in snapshot
    expected = generate(model, tok.encode("the cat"), 8, temperature=0.8, top_k=5,
                        generator=torch.Generator().manual_seed(3))
    assert explorer.sample(0.8, 5, 1.0, 3) == tok.decode(expected[len(tok.encode("the cat")):])
    explorer.temperature.value = 0.0
    greedy = generate(model, tok.encode("the cat"), 8, temperature=0)
    assert html.escape(tok.decode(greedy[len(tok.encode("the cat")):])) in explorer.readout.value
    assert bytes(explorer.image.value).startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="prompt"):
        SamplingExplorer(model, tok, "")

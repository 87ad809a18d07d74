"""Chapter 4's helpers: the attention-inspection functions appended to llm_lib.attention (split_heads,
merge_heads, attention_weights) and llm_lib.attention_viz (attention_maps, token_labels, the explorer).

The weights a tool shows must be the ones the model really used, so attention_maps is checked by
rebuilding each attention layer's output from them; the rest against PyTorch.
"""
import pytest
import torch
import torch.nn.functional as F

from llm_lib.attention import (MultiHeadAttention, attention_weights, causal_mask, merge_heads,
                               scaled_dot_product_attention, split_heads)
from llm_lib.attention_viz import AttentionExplorer, attention_maps, plot_attention, token_labels
from llm_lib.model import GPT, GPTConfig
from llm_lib.tokenizer import BPETokenizer

f64 = dict(dtype=torch.float64)


def test_split_and_merge_heads_layout():
    x = torch.arange(2 * 3 * 6, **f64).reshape(2, 3, 6)
    heads = split_heads(x, 3)
    assert heads.shape == (2, 3, 3, 2)
    # head h of position t holds features 2h, 2h + 1 of that position
    assert torch.equal(heads[1, 2, 0], x[1, 0, 4:6])
    assert torch.equal(merge_heads(heads), x)
    with pytest.raises(ValueError, match="divisible"):
        split_heads(x, 4)
    with pytest.raises(ValueError, match=r"\(B, T, d_model\)"):
        split_heads(x[0], 3)
    with pytest.raises(ValueError, match=r"\(B, H, T, d_k\)"):
        merge_heads(x)


@pytest.mark.parametrize("mask_kind", [None, "causal", "random", "float"])
def test_attention_weights_are_the_softmax_and_reproduce_the_output(mask_kind):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g, **f64), torch.randn(2, 3, 5, 8, generator=g, **f64),
               torch.randn(2, 3, 5, 4, generator=g, **f64))
    mask = {None: None, "causal": causal_mask(5), "random": torch.rand(5, 5, generator=g) > 0.5,
            "float": torch.randn(2, 1, 5, 5, generator=g, **f64)}[mask_kind]
    if mask_kind == "random":
        mask[:, 0] = True
    w = attention_weights(q, k, mask)
    scores = q @ k.transpose(-2, -1) / 8 ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    torch.testing.assert_close(w, torch.softmax(scores, dim=-1), atol=1e-12, rtol=0)
    torch.testing.assert_close(w @ v, scaled_dot_product_attention(q, k, v, mask), atol=1e-12, rtol=0)
    torch.testing.assert_close(w @ v, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-10, rtol=0)


def test_attention_weights_of_a_row_with_no_key_are_zero():
    q, k = torch.randn(3, 4, **f64), torch.randn(3, 4, **f64)
    mask = torch.ones(3, 3, dtype=torch.bool)
    mask[1] = False
    w = attention_weights(q, k, mask)
    assert torch.all(w[1] == 0)
    torch.testing.assert_close(w.sum(-1), torch.tensor([1.0, 0.0, 1.0], **f64))


@pytest.mark.parametrize("variant", ["gpt2", "llama"])
@pytest.mark.parametrize("fused", [True, False])
def test_attention_maps_are_the_weights_the_model_used(variant, fused):
    torch.manual_seed(0)
    extra = dict(norm="rmsnorm", pos="rope", mlp="swiglu", bias=False, tie_weights=False) if variant == "llama" else {}
    model = GPT(GPTConfig(vocab_size=50, context_length=16, n_layer=2, n_head=4, d_model=32,
                          fused_attention=fused, **extra))
    ids = torch.randint(0, 50, (2, 7))
    seen = {}  # layer -> (input of attn, output of attn, rope)

    def keep(i):
        def hook(attn, args, kwargs, output):
            seen[i] = (args[0], output, kwargs.get("rope"))
        return hook

    handles = [b.attn.register_forward_hook(keep(i), with_kwargs=True) for i, b in enumerate(model.blocks)]
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()

    maps = attention_maps(model, ids)
    assert maps.shape == (2, 2, 4, 7, 7)  # (B, n_layer, H, T, T)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 4, 7))
    assert torch.all(maps.triu(diagonal=1) == 0)  # causal: nothing from the future
    for i, block in enumerate(model.blocks):
        x, y, _ = seen[i]
        _, _, v = block.attn.qkv(x).split(32, dim=-1)
        rebuilt = block.attn.proj(merge_heads(maps[:, i] @ split_heads(v, 4)))
        torch.testing.assert_close(rebuilt, y, atol=1e-5, rtol=1e-4)
    # one sequence in, (n_layer, H, T, T) out; hooks are removed and the mode is restored
    model.train()
    single = attention_maps(model, ids[0].tolist())
    assert single.shape == (2, 4, 7, 7) and model.training
    assert all(not b.attn._forward_pre_hooks for b in model.blocks)
    torch.testing.assert_close(single, maps[0])


def test_attention_maps_rejects_bad_input():
    model = GPT(GPTConfig(vocab_size=10, context_length=8, n_layer=1, n_head=2, d_model=8))
    with pytest.raises(TypeError, match="token ids"):
        attention_maps(model, torch.zeros(3))
    with pytest.raises(ValueError, match="T >= 1"):
        attention_maps(model, [])
    with pytest.raises(TypeError, match="blocks"):
        attention_maps(MultiHeadAttention(8, 2), [1, 2])


def test_token_labels_and_explorer_html():
    tok = BPETokenizer.train("the cat sat on the mat because it was tired. " * 20, vocab_size=280)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=280, context_length=32, n_layer=2, n_head=2, d_model=16))
    text = "the cat sat because it was tired"
    ids = tok.encode(text)
    labels = token_labels(tok, ids)
    assert "".join(labels).replace("\u00b7", " ") == text
    explorer = AttentionExplorer(model, tok, text, layer=1, head=1)
    assert explorer.labels[explorer.query.value].strip("\u00b7") == "it"  # the default query is "it"
    torch.testing.assert_close(explorer.weights(), attention_maps(model, ids)[1, 1])
    page = explorer.static_html()
    assert "Layer 1, head 1" in page and explorer._snapshot_class in page and "&lt;" not in text
    explorer.head.value = "mean"
    assert "mean of heads" in explorer.view.value
    explorer.text.value = "the mat was tired"  # a new text: new tokens, maps and query list
    assert len(explorer.query.options) == len(tok.encode("the mat was tired"))
    assert explorer.maps.shape[-1] == len(tok.encode("the mat was tired"))
    with pytest.raises(ValueError, match="layer"):
        AttentionExplorer(model, tok, text, layer=5)


def test_plot_attention_hatches_masked_cells():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    w = attention_weights(torch.randn(4, 8), torch.randn(4, 8), causal_mask(4))
    image = plot_attention(ax, w, ["a", "b", "c", "d"], title="t", mask=causal_mask(4), colorbar=True)
    assert image.get_array().mask[0, 1] and not image.get_array().mask[1, 0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c", "d"]
    plt.close(fig)

"""Decoding: filters match transformers' logits warpers, the KV cache changes nothing but speed."""
import pytest
import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from llm_lib.attention import KVCache
from llm_lib.model import GPT, GPTConfig
from llm_lib.sampling import generate, kv_cache_bytes, sample_next, top_k_filter, top_p_filter

IDS = torch.zeros(1, 1, dtype=torch.long)  # the warpers take input_ids but ignore them


def random_logits(seed, shape=(4, 50), ties=False):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g) * 3
    # Rounding to halves makes many exact ties, the hard case for "keep the k-th and its equals".
    return torch.round(logits * 2) / 2 if ties else logits


def same_filtered(ours, theirs):
    """Same tokens removed (-inf) and the same values kept."""
    assert torch.equal(torch.isneginf(ours), torch.isneginf(theirs))
    kept = ~torch.isneginf(theirs)
    torch.testing.assert_close(ours[kept], theirs[kept], rtol=0, atol=0)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("k", [1, 2, 7, 50, 80])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.7])
def test_top_k_with_temperature_matches_transformers(k, temperature, ties):
    logits = random_logits(k, ties=ties)
    theirs = TopKLogitsWarper(k)(IDS, TemperatureLogitsWarper(temperature)(IDS, logits.clone()))
    ours = top_k_filter(logits / temperature, k)
    same_filtered(ours, theirs)
    assert ((~torch.isneginf(ours)).sum(-1) >= min(k, logits.shape[-1])).all()


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("p", [1e-9, 0.01, 0.3, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.7])
def test_top_p_with_temperature_matches_transformers(p, temperature, ties):
    logits = random_logits(int(p * 1000) + 7, ties=ties)
    theirs = TopPLogitsWarper(p)(IDS, TemperatureLogitsWarper(temperature)(IDS, logits.clone()))
    ours = top_p_filter(logits / temperature, p)
    same_filtered(ours, theirs)
    assert ((~torch.isneginf(ours)).sum(-1) >= 1).all()  # never everything removed


def test_filter_edge_cases():
    logits = torch.tensor([[1.0, 3.0, 2.0, 3.0]])
    assert torch.equal(top_k_filter(logits, 1), torch.tensor([[-torch.inf, 3.0, -torch.inf, 3.0]]))  # ties kept
    assert torch.equal(top_k_filter(logits, 100), logits)
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    assert (~torch.isneginf(top_p_filter(logits, 1e-12))).sum() == 1  # tiny p: just the top token
    assert torch.equal(top_k_filter(logits[0], 2), top_k_filter(logits, 2)[0])  # any leading shape
    assert torch.equal(top_p_filter(logits[None], 0.5)[0], top_p_filter(logits, 0.5))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="top_k"):
            top_k_filter(logits, bad)
    for bad in (0.0, -0.1, 1.01):
        with pytest.raises(ValueError, match="top_p"):
            top_p_filter(logits, bad)
    with pytest.raises(ValueError, match="temperature"):
        sample_next(logits, temperature=-1)
    assert sample_next(logits[:, :3], temperature=0).item() == 1


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    config = dict(vocab_size=37, context_length=12, n_layer=2, n_head=2, d_model=16)
    return GPT(GPTConfig(**(config | overrides))).eval()


@pytest.mark.parametrize("arch", [{}, {"norm": "rmsnorm", "pos": "rope", "mlp": "swiglu", "bias": False}])
@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=1.0),
                                      dict(temperature=0.8, top_k=5, top_p=0.9)])
def test_kv_cache_gives_the_same_tokens(arch, sampling):
    model = tiny_model(**arch)
    prompt = torch.randint(0, 37, (3, 4), generator=torch.Generator().manual_seed(1))
    # 20 new tokens with context 12: also crosses into the sliding window.
    runs = [generate(model, prompt, 20, use_cache=cache, generator=torch.Generator().manual_seed(2), **sampling)
            for cache in (True, False)]
    assert runs[0].shape == (3, 24) and torch.equal(runs[0][:, :4], prompt)
    assert torch.equal(runs[0], runs[1])


def test_greedy_is_argmax_of_the_full_forward_and_forms_round_trip():
    model = tiny_model()
    out = generate(model, [1, 2, 3], 5, temperature=0)
    assert isinstance(out, list) and out[:3] == [1, 2, 3] and len(out) == 8
    seq = [1, 2, 3]
    with torch.no_grad():
        for _ in range(5):
            seq.append(model(torch.tensor([seq])).argmax(-1)[0, -1].item())
    assert out == seq
    assert generate(model, torch.tensor([1, 2, 3]), 5, temperature=0).tolist() == seq
    # Seeded sampling is reproducible; the model's mode is restored.
    model.train()
    a = generate(model, [1], 10, generator=torch.Generator().manual_seed(0))
    b = generate(model, [1], 10, generator=torch.Generator().manual_seed(0))
    assert a == b and model.training


def test_eos_stops_and_pads_finished_rows():
    model = tiny_model()
    greedy = generate(model, [5], 8, temperature=0)
    eos = greedy[3]  # the third new token: stop there
    out = generate(model, [5], 8, temperature=0, eos_id=eos)
    assert out == greedy[:greedy.index(eos, 1) + 1]
    rows = generate(model, torch.tensor([[5], [6]]), 8, temperature=0, eos_id=eos)
    for row in rows.tolist():
        if eos in row[1:]:
            first = row.index(eos, 1)
            assert all(t == eos for t in row[first:])


def test_bad_inputs():
    model = tiny_model()
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, [1], -1)
    with pytest.raises(ValueError, match="non-empty"):
        generate(model, [], 3)
    with pytest.raises(TypeError, match="ids must be"):
        generate(model, "hello", 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kv_cache_bytes_matches_the_cached_tensors(dtype):
    model = tiny_model(n_layer=3, n_head=4, d_model=32).to(dtype)
    caches = [KVCache() for _ in model.blocks]
    with torch.no_grad():
        model(torch.randint(0, 37, (2, 7)), kv_cache=caches)
        model(torch.randint(0, 37, (2, 1)), kv_cache=caches)  # 8 tokens cached now
    real = sum(t.numel() * t.element_size() for c in caches for t in (c.k, c.v))
    assert real == kv_cache_bytes(model.config, 8, dtype, batch_size=2) == 3 * 2 * 4 * 8 * 8 * 2 * dtype.itemsize
    assert kv_cache_bytes(GPTConfig(), 1024) == 12 * 2 * 768 * 1024 * 4  # GPT-2 small: 72 MiB

"""LoRALinear against peft's LoraModel (test-only dependency), merge/unmerge, parameter counts, bad input."""
import copy
import math

import pytest
import torch
import torch.nn as nn

from llm_lib.lora import LoRALinear, add_lora, count_trainable, lora_parameters, merge_lora, unmerge_lora
from llm_lib.model import GPT, GPTConfig

peft = pytest.importorskip("peft")

TINY = GPTConfig(vocab_size=64, context_length=16, n_layer=2, n_head=2, d_model=16)


def _randomise_lora(model, seed):
    """B starts at zero (the update is 0); give A and B random values so the test compares something."""
    g = torch.Generator().manual_seed(seed)
    for p in lora_parameters(model):
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _peft_gpt(model, r, alpha, targets):
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0)
    return peft.LoraModel(model, config, "default")


@pytest.mark.parametrize("r,alpha,targets", [(2, 4, ("qkv",)), (4, 16, ("qkv", "proj", "fc")), (1, 1, ("fc",))])
def test_matches_peft_lora_model_on_a_gpt(r, alpha, targets):
    torch.manual_seed(0)
    base = GPT(TINY)
    ours = copy.deepcopy(base)
    names = add_lora(ours, r=r, alpha=alpha, targets=targets)
    _randomise_lora(ours, seed=r)
    theirs = _peft_gpt(copy.deepcopy(base), r, alpha, targets)
    # Copy our A and B into peft's adapters: same weights, then outputs must agree.
    modules = dict(theirs.model.named_modules())
    for name in names:
        ours_layer, peft_layer = dict(ours.named_modules())[name], modules[name]
        assert peft_layer.scaling["default"] == ours_layer.scaling == alpha / r
        with torch.no_grad():
            peft_layer.lora_A["default"].weight.copy_(ours_layer.lora_A)
            peft_layer.lora_B["default"].weight.copy_(ours_layer.lora_B)
    idx = torch.randint(0, TINY.vocab_size, (3, 11), generator=torch.Generator().manual_seed(1))
    expected = theirs(idx)
    got = ours(idx)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, base(idx), atol=1e-4)  # the adapters really change the model
    # Same trainable parameters as peft (it also freezes everything but the adapters).
    peft_trainable = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert count_trainable(ours)[0] == peft_trainable


def test_initialisation_follows_peft():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(40, 30), r=8, alpha=16)
    assert torch.count_nonzero(layer.lora_B) == 0
    bound = 1 / math.sqrt(40)  # kaiming_uniform(a=√5) on fan_in = 40, as nn.Linear and peft use
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.abs().max() > 0.8 * bound
    # peft draws its A from the same distribution: same bound, same shape, B zero too.
    model = peft.LoraModel(nn.Sequential(nn.Linear(40, 30)), peft.LoraConfig(r=8, lora_alpha=16,
                                                                              target_modules=["0"]), "default")
    peft_a, peft_b = model.model[0].lora_A["default"].weight, model.model[0].lora_B["default"].weight
    assert peft_a.shape == layer.lora_A.shape and peft_b.shape == layer.lora_B.shape
    assert peft_a.abs().max() <= bound and peft_a.abs().max() > 0.8 * bound
    assert torch.count_nonzero(peft_b) == 0
    x = torch.randn(5, 40)
    torch.testing.assert_close(layer(x), layer.base(x), rtol=0, atol=0)  # B = 0: the base model exactly


def test_merge_then_unmerge_is_exact():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(24, 12), r=4, alpha=8)
    with torch.no_grad():
        layer.lora_B.normal_()
    original = layer.base.weight.clone()
    x = torch.randn(7, 24)
    before = layer(x)
    layer.merge()
    assert layer.merged
    torch.testing.assert_close(layer.base.weight, original + layer.lora_B @ layer.lora_A * 2.0)
    torch.testing.assert_close(layer(x), before, rtol=1e-5, atol=1e-6)
    layer.unmerge()
    assert torch.equal(layer.base.weight, original)  # bit for bit
    assert torch.equal(layer(x), before)
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()
    layer.merge()
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()


def test_merge_lora_on_a_gpt_and_parameter_counts():
    torch.manual_seed(0)
    model = GPT(TINY)
    total_before = count_trainable(model)[1]
    names = add_lora(model, r=2, alpha=4, targets=("qkv", "proj"))
    assert len(names) == 3 * TINY.n_layer  # attn.qkv, attn.proj, mlp.proj per block
    trainable, total = count_trainable(model)
    C = TINY.d_model
    per_block = 2 * (C + 3 * C) + 2 * (C + C) + 2 * (4 * C + C)  # r·(in + out) per wrapped layer
    assert trainable == TINY.n_layer * per_block
    assert total == total_before + trainable
    _randomise_lora(model, seed=3)
    idx = torch.randint(0, TINY.vocab_size, (2, 9))
    before = model(idx)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    assert merge_lora(model) == len(names)
    torch.testing.assert_close(model(idx), before, rtol=1e-4, atol=1e-5)
    unmerge_lora(model)
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def test_only_lora_parameters_get_gradients():
    torch.manual_seed(0)
    model = GPT(TINY)
    add_lora(model, r=2, alpha=2, targets=("qkv",))
    idx = torch.randint(0, TINY.vocab_size, (2, 8))
    _, loss = model(idx, idx)
    loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == ("lora_" in name), name


def test_bad_input():
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(nn.Conv1d(3, 3, 1), r=1, alpha=1)
    for r in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="rank"):
            LoRALinear(nn.Linear(4, 4), r=r, alpha=1)
    with pytest.raises(ValueError, match="low-rank"):
        LoRALinear(nn.Linear(4, 3), r=4, alpha=1)
    with pytest.raises(ValueError, match="alpha"):
        LoRALinear(nn.Linear(4, 4), r=1, alpha=0)
    with pytest.raises(ValueError, match="dropout"):
        LoRALinear(nn.Linear(4, 4), r=1, alpha=1, dropout=1.0)
    with pytest.raises(ValueError, match="in_features"):
        LoRALinear(nn.Linear(4, 4), r=1, alpha=1)(torch.ones(2, 5))
    with pytest.raises(ValueError, match="no nn.Linear named"):
        add_lora(GPT(TINY), r=1, alpha=1, targets=("nope",))
    with pytest.raises(ValueError, match="targets"):
        add_lora(GPT(TINY), r=1, alpha=1, targets="qkv")

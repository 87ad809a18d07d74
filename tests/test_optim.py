"""llm_lib.optim against torch.optim.AdamW, torch.nn.utils.clip_grad_norm_ and the cosine formula."""

import copy
import doctest
import math

import pytest
import torch

from llm_lib import optim
from llm_lib.optim import AdamW, clip_grad_norm_, cosine_lr


def test_docstring_examples_run():
    result = doctest.testmod(optim, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 4


# --- AdamW -------------------------------------------------------------------------------

def make_mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.GELU(), torch.nn.Linear(16, 3)
    ).double()


def param_groups(model):
    """Decay on weight matrices, none on biases, and a different lr for the last layer."""
    first, last = model[0], model[2]
    return [
        {"params": [first.weight], "weight_decay": 0.1},
        {"params": [first.bias, last.bias], "weight_decay": 0.0},
        {"params": [last.weight], "weight_decay": 0.05, "lr": 3e-3},
    ]


def train_step(model, opt, x, y):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()


@pytest.fixture
def one_thread():
    # Thousands of tiny ops: extra intra-op threads only fight over the shared CPU cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_adamw_matches_torch_for_1000_steps(one_thread):
    ours_model, ref_model = make_mlp(), make_mlp()
    hp = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    ours = AdamW(param_groups(ours_model), **hp)
    ref = torch.optim.AdamW(param_groups(ref_model), **hp)
    g = torch.Generator().manual_seed(1)
    teacher = torch.randn(6, 3, generator=g, dtype=torch.float64)
    start = [p.detach().clone() for p in ours_model.parameters()]
    for _ in range(1000):
        # A fresh noisy batch each step keeps the problem well conditioned: with one fixed
        # batch the model overfits and Adam's tiny denominators amplify last-bit differences.
        x = torch.randn(32, 6, generator=g, dtype=torch.float64)
        y = x @ teacher + 0.1 * torch.randn(32, 3, generator=g, dtype=torch.float64)
        train_step(ours_model, ours, x, y)
        train_step(ref_model, ref, x, y)
    for p, q, p0 in zip(ours_model.parameters(), ref_model.parameters(), start):
        assert not torch.equal(p, p0)  # it really trained
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    assert ours.state[ours_model[0].weight]["step"] == 1000


def test_adamw_defaults_equal_torch():
    opt = AdamW([torch.zeros(2, requires_grad=True)])
    ref = torch.optim.AdamW([torch.zeros(2, requires_grad=True)])
    for key in ("lr", "betas", "eps", "weight_decay"):
        assert opt.defaults[key] == ref.defaults[key]


def test_adamw_skips_params_without_grad_and_returns_closure_loss():
    used, unused = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    opt = AdamW([used, unused], lr=0.1)
    loss = opt.step(lambda: (used.sum() * 0 + 7.0).backward() or torch.tensor(7.0))
    assert loss.item() == 7.0
    assert unused.grad is None and torch.equal(unused, torch.ones(3)) and unused not in opt.state


def test_adamw_state_dict_round_trip_and_interop_with_torch():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(16, 6, generator=g, dtype=torch.float64)
    y = torch.randn(16, 3, generator=g, dtype=torch.float64)
    model = make_mlp()
    opt = AdamW(param_groups(model), lr=1e-2)
    for _ in range(5):
        train_step(model, opt, x, y)
    # Resume from a checkpoint in three optimizers: ours, and torch's, loaded from our state.
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    runs = []
    for cls in (AdamW, torch.optim.AdamW):
        m = make_mlp(seed=99)
        m.load_state_dict(saved_model)
        o = cls(param_groups(m), lr=1e-2)
        # load_state_dict keeps the given tensors (no copy): give each optimizer its own.
        o.load_state_dict(copy.deepcopy(saved_opt))
        runs.append((m, o))
    for _ in range(5):
        train_step(model, opt, x, y)
        for m, o in runs:
            train_step(m, o, x, y)
    for m, _ in runs:
        for p, q in zip(model.parameters(), m.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-12)
    # torch's checkpoint (tensor "step") loads into ours too.
    ours = AdamW(param_groups(make_mlp()), lr=1e-2)
    ours.load_state_dict(runs[1][1].state_dict())
    assert ours.state_dict()["state"][0]["step"] == 10


def test_adamw_bad_arguments():
    p = [torch.zeros(2, requires_grad=True)]
    for kwargs, match in [({"lr": -1.0}, "lr"), ({"betas": (0.9, 1.0)}, "betas"),
                          ({"eps": -1e-8}, "eps"), ({"weight_decay": -0.1}, "weight_decay")]:
        with pytest.raises(ValueError, match=match):
            AdamW(p, **kwargs)


# --- cosine_lr ---------------------------------------------------------------------------

def cosine_lr_reference(it, max_lr, min_lr, warmup, cycle):
    """Written differently on purpose: (1 + cos(pi t)) / 2 = cos(pi t / 2)^2."""
    if it < warmup:
        return it / warmup * max_lr
    if it <= cycle:
        return min_lr + (max_lr - min_lr) * math.cos(math.pi / 2 * (it - warmup) / (cycle - warmup)) ** 2
    return min_lr


@pytest.mark.parametrize("max_lr,min_lr,warmup,cycle", [(1.0, 0.1, 7, 21), (6e-4, 6e-5, 0, 100), (3e-4, 0.0, 10, 11)])
def test_cosine_lr_matches_formula(max_lr, min_lr, warmup, cycle):
    for it in range(cycle + 10):
        assert cosine_lr(it, max_lr, min_lr, warmup, cycle) == pytest.approx(
            cosine_lr_reference(it, max_lr, min_lr, warmup, cycle), rel=1e-12, abs=1e-15
        )


def test_cosine_lr_landmarks():
    # max_lr=1, min_lr=0.1, warmup 7, decay ends at 21.
    assert cosine_lr(0, 1.0, 0.1, 7, 21) == 0.0  # warmup starts from zero
    assert cosine_lr(1, 1.0, 0.1, 7, 21) == pytest.approx(1 / 7)
    assert cosine_lr(7, 1.0, 0.1, 7, 21) == 1.0  # peak at the end of warmup
    assert cosine_lr(14, 1.0, 0.1, 7, 21) == pytest.approx(0.55)  # half-way: mean of max and min
    assert cosine_lr(21, 1.0, 0.1, 7, 21) == pytest.approx(0.1)
    assert cosine_lr(10**6, 1.0, 0.1, 7, 21) == 0.1  # constant floor after the cycle
    assert cosine_lr(0, 1.0, 0.1, 0, 21) == 1.0  # no warmup: start at the peak


def test_cosine_lr_bad_arguments():
    with pytest.raises(ValueError, match="it must be an int >= 0"):
        cosine_lr(-1, 1.0, 0.1, 7, 21)
    with pytest.raises(ValueError, match="warmup_iters"):
        cosine_lr(0, 1.0, 0.1, 2.5, 21)
    with pytest.raises(ValueError, match=r"cosine_cycle_iters \(7\) must be greater than warmup_iters \(7\)"):
        cosine_lr(0, 1.0, 0.1, 7, 7)
    with pytest.raises(ValueError, match="min_lr <= max_lr"):
        cosine_lr(0, 0.1, 1.0, 7, 21)
    with pytest.raises(ValueError, match="min_lr <= max_lr"):
        cosine_lr(0, 1.0, -0.1, 7, 21)


# --- clip_grad_norm_ ---------------------------------------------------------------------

def params_with_grads(seed, scale):
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 5), (5,), (3, 2, 2), (7,)]
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    for p in params[:3]:  # the last one has no gradient (unused this step)
        p.grad = torch.randn(p.shape, generator=g) * scale
    return params


@pytest.mark.parametrize("max_norm", [1e-3, 0.5, 1.0, 1e9, 0.0])
@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_clip_grad_norm_matches_torch(max_norm, scale):
    ours, ref = params_with_grads(3, scale), params_with_grads(3, scale)
    before = [p.grad.clone() for p in ours[:3]]
    norm = clip_grad_norm_(ours, max_norm)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref, max_norm)
    torch.testing.assert_close(norm, ref_norm)
    for p, q in zip(ours, ref):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad)
    new_norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in ours[:3]))
    if norm > max_norm:
        assert new_norm == pytest.approx(max_norm, rel=1e-4, abs=1e-6)
    else:
        assert all(torch.equal(p.grad, b) for p, b in zip(ours[:3], before))  # untouched


def test_clip_grad_norm_edge_cases():
    p = torch.nn.Parameter(torch.zeros(3))
    assert clip_grad_norm_([p], 1.0).item() == 0.0  # no grads at all
    p.grad = torch.tensor([0.0, 3.0, 4.0])
    assert clip_grad_norm_(p, 1.0).item() == 5.0  # a single tensor, like torch
    torch.testing.assert_close(p.grad, torch.tensor([0.0, 0.6, 0.8]))
    gen_params = (q for q in [p])  # a generator is consumed only once
    clip_grad_norm_(gen_params, 0.5)
    torch.testing.assert_close(p.grad, torch.tensor([0.0, 0.3, 0.4]), atol=1e-6, rtol=0)
    for bad in (-1.0, float("nan"), "1.0"):
        with pytest.raises(ValueError, match="max_norm"):
            clip_grad_norm_([p], bad)


def test_adamw_betas_must_be_a_pair():
    from llm_lib.optim import AdamW

    with pytest.raises(ValueError, match="betas must be two numbers"):
        AdamW([torch.nn.Parameter(torch.zeros(2))], betas=0.9)

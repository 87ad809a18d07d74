"""The reward, ppo and dpo stage builders end to end on a tiny GPT (seconds, not minutes): files written,
stats present, and the same recipe gives the same model twice (determinism)."""
import json

import pytest
import torch

from llm_lib.dpo import build_dpo_model
from llm_lib.model import GPT, GPTConfig
from llm_lib.ppo import build_ppo_model
from llm_lib.reward import build_reward_model, load_reward_model, pairs_from_json

pytestmark = pytest.mark.slow

REWARD = {"seed": 0, "data": {"n_train": 24, "n_test": 9, "n_sampled_train": 4, "n_sampled_test": 2,
                              "samples_per_prompt": 2, "max_new_tokens": 4},
          "train": {"steps": 3, "batch_size": 8, "lr": 3e-4, "eval_interval": 2}}
PPO = {"seed": 0, "n_prompts": 12, "n_test": 6,
       "ppo": {"steps": 2, "batch_size": 4, "minibatch_size": 2, "ppo_epochs": 1, "lr": 1e-4, "value_lr": 1e-4,
               "kl_coef": 0.05, "clip_eps": 0.2, "value_clip": 0.2, "gamma": 1.0, "lam": 0.95, "max_new_tokens": 4,
               "temperature": 1.0, "unfinished_penalty": -2.0, "sample_every": 1, "progress": False}}
DPO = {"seed": 0, "n_test": 6, "max_new_tokens": 4, "eval_interval": 1,
       "dpo": {"steps": 2, "batch_size": 4, "lr": 1e-4, "beta": 0.1, "loss_type": "sigmoid", "progress": False}}


@pytest.fixture(scope="module")
def tok():
    from llm_lib import pipeline

    return pipeline.load("tokenizer")


def tiny_sft():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=4096, context_length=64, n_layer=1, n_head=2, d_model=16)).eval()


def test_reward_ppo_dpo_builders(tok, tmp_path):
    reward_dir = tmp_path / "reward"
    reward_dir.mkdir()
    stats = build_reward_model(reward_dir, {**REWARD, "train": {**REWARD["train"], "progress": False}}, tok, tiny_sft())
    assert {"held_out_accuracy", "held_out_accuracy_by_kind", "train_pairs"} <= set(stats)
    rm = load_reward_model(reward_dir)
    train_pairs = pairs_from_json((reward_dir / "pairs_train.jsonl").read_text())
    test_pairs = pairs_from_json((reward_dir / "pairs_test.jsonl").read_text())
    assert len(train_pairs) == stats["train_pairs"] and len(test_pairs) == stats["test_pairs"]
    assert not {p.prompt for p in train_pairs} & {p.prompt for p in test_pairs}  # splits never share a prompt

    runs = []
    for k in range(2):
        out = tmp_path / f"ppo{k}"
        out.mkdir()
        runs.append(build_ppo_model(out, PPO, tok, tiny_sft(), rm))
    assert runs[0]["curves"] == runs[1]["curves"]  # deterministic under the seed
    assert len(runs[0]["curves"]["score"]) == PPO["ppo"]["steps"]
    assert 0.0 <= runs[0]["rm_win_rate"] <= 1.0
    assert (tmp_path / "ppo0" / "eval.json").exists() and json.loads((tmp_path / "ppo0" / "history.json").read_text())["samples"]

    out = tmp_path / "dpo"
    out.mkdir()
    stats = build_dpo_model(out, DPO, tok, tiny_sft(), rm, train_pairs, test_pairs)
    assert stats["curves"]["loss"][0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 0
    assert len(stats["curves"]["eval_step"]) == DPO["dpo"]["steps"] + 1

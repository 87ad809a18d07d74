"""Shared by every benchmark: rewrite one named section of benchmarks/RESULTS.md atomically.

Each benchmark owns a section delimited by HTML comments, so benchmarks can run in any order and
re-running one leaves the others' results alone.
"""
import os
import platform
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = "# Benchmark results\n\nEach section is rewritten by the script named in it; ratios compare against a peer measured in the same run.\n"


def machine() -> str:
    """One line describing where the numbers were measured."""
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {datetime.now(timezone.utc):%Y-%m-%d}"


def write_section(name: str, markdown: str) -> None:
    """Print `markdown`, then replace (or append) the section called `name` in RESULTS.md with it."""
    print(markdown)
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    block = f"{begin}\n{markdown.strip()}\n\n_Measured on {machine()}._\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    fd, tmp = tempfile.mkstemp(dir=RESULTS.parent, prefix=".RESULTS.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, RESULTS)

"""GGUF block quantization (llm_lib.quantize) against the gguf package's numpy implementation, and what
each format costs the course model.

    .venv/bin/python benchmarks/bench_quantize.py   # ~2-3 minutes; rewrites the "quantize" section of RESULTS.md

1. Throughput: Q8_0 and Q4_0 quantization of float32 matrices, llm_lib vs `gguf.quants.quantize`
   (the reference the tests compare bytes with), fastest of REPS interleaved runs. The bytes are checked
   to be identical in the same run. Goal: ratio (gguf time / llm_lib time) >= 1x.
2. Quality: the course base model at F32, Q8_0, Q4_0 and Q4_K (llm_lib.quantize.quantize_model): size of
   the tensor data (what export_gguf writes), bits per weight, and held-out perplexity on the full
   held-out works of pipeline.RECIPES["base"].
"""
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402

from gguf import GGMLQuantizationType, quants  # noqa: E402

from llm_lib import pipeline  # noqa: E402
from llm_lib import quantize as Q  # noqa: E402
from llm_lib.data import shakespeare_texts  # noqa: E402
from llm_lib.train import held_out_loss  # noqa: E402

REPS = 5
SHAPES = [(4096, 4096), (1024, 11008), (4096, 192)]  # a 7B-size square matrix, an MLP-like one, the course embedding


def best_of(fns):
    """Fastest time of each function over REPS interleaved rounds."""
    times = [[] for _ in fns]
    for _ in range(REPS):
        for fn, t in zip(fns, times):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return [min(t) for t in times]


def main():
    torch.set_num_threads(1)
    from importlib.metadata import version

    rng = np.random.default_rng(0)
    lines = ["## quantize: GGUF block quantization and what it costs the course model", "",
             f"`python benchmarks/bench_quantize.py`, gguf {version('gguf')}, "
             f"numpy {np.__version__}, fastest of {REPS} interleaved runs; bytes checked identical in the same run. "
             "ratio = gguf time / llm_lib time (higher is better). Goal: >= 1x.", "",
             "| format | matrix | llm_lib ms | gguf ms | llm_lib M weights/s | ratio |", "|---|---|---:|---:|---:|---:|"]
    worst = math.inf
    for shape in SHAPES:
        x = rng.standard_normal(shape).astype(np.float32)
        for qtype in ("Q8_0", "Q4_0"):
            ggml_type = GGMLQuantizationType[qtype]
            assert Q.quantize(x, qtype).tobytes() == quants.quantize(x, ggml_type).tobytes(), (qtype, shape)
            ours, theirs = best_of([lambda: Q.quantize(x, qtype), lambda: quants.quantize(x, ggml_type)])
            worst = min(worst, theirs / ours)
            lines.append(f"| {qtype} | {shape[0]}×{shape[1]} | {1e3 * ours:.1f} | {1e3 * theirs:.1f} | "
                         f"{x.size / ours / 1e6:.0f} | {theirs / ours:.2f}x |")
    lines += ["", f"Worst ratio {worst:.2f}x ({'meets' if worst >= 1 else 'misses'} the 1x goal).", ""]

    model, tok = pipeline.load("base"), pipeline.load("tokenizer")
    plays = shakespeare_texts("modern")
    held = [plays[name] for name in pipeline.RECIPES["base"]["held_out"]]
    lines += ["Course base model, held-out works (" + ", ".join(pipeline.RECIPES["base"]["held_out"]) + "), "
              "tensor data as written by `export_gguf` (matrices whose rows are not a multiple of 256 fall "
              "back from Q4_K to Q4_0):", "",
              "| format | size (MB) | size saved | bits/weight | held-out loss | perplexity | perplexity increase |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    base_loss, base_bytes = None, Q.gguf_nbytes(model, "F32")
    for qtype in Q.QTYPES:
        loss, _, _ = held_out_loss(Q.quantize_model(model, qtype), tok, held)
        base_loss = loss if base_loss is None else base_loss
        nbytes = Q.gguf_nbytes(model, qtype)
        lines.append(f"| {qtype} | {nbytes / 1e6:.2f} | {100 * (1 - nbytes / base_bytes):.0f}% | "
                     f"{8 * nbytes / model.num_params():.2f} | {loss:.4f} | {math.exp(loss):.2f} | "
                     f"{100 * (math.exp(loss - base_loss) - 1):+.2f}% |")
    write_section("quantize", "\n".join(lines))


if __name__ == "__main__":
    main()

"""Training throughput and MFU of the course trainer against a plain single-file PyTorch GPT loop.

    .venv/bin/python benchmarks/bench_train.py      # ~2 minutes; rewrites the "train" section of RESULTS.md

Ours:  llm_lib.train.train(GPT(base config), ..., TrainConfig(...)): llm_lib's GPT, its own AdamW
       (llm_lib.optim), per-step cosine lr, gradient-norm clip, loss/grad-norm logged every step.
Peer:  a minimal nanoGPT-style loop written below: nn.Embedding, pre-norm blocks with
       F.scaled_dot_product_attention(is_causal=True), tied head, torch.optim.AdamW, the same clip,
       the same batch size and context, the same kind of random-window batches.
Both train the base model's config (llm_lib.pipeline.RECIPES["base"]["model"]) on random token ids
(speed does not depend on the data). tokens/s = STEPS · B · T / wall time of STEPS steps; the
CPU time of this process per step (time.process_time) is reported beside it, since on a shared machine
other processes inflate wall time but not our own CPU seconds.
MFU = flops_per_token(config, training=True) · tokens/s / peak, where peak is the FLOP/s of a
large float32 matmul measured in this run with the same number of threads.
Goal: course / plain tokens/s >= 1.0x.
"""
import io
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402

from llm_lib.model import GPT, GPTConfig, flops_per_token  # noqa: E402
from llm_lib.pipeline import RECIPES  # noqa: E402
from llm_lib.train import TrainConfig, train  # noqa: E402

THREADS = 2
STEPS = 16          # optimizer steps per timed run
REPS = 5            # interleaved runs of each; the fastest counts (other processes only add time)
WARMUP_STEPS = 2
N_DATA = 200_000    # random token ids to draw windows from
MATMUL_N = 2048     # peak: (N, N) @ (N, N) float32


# --- the plain peer: a single-file nanoGPT-style GPT ---------------------------------------------

class PlainBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_head = c.n_head
        self.ln1, self.ln2 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.qkv, self.proj = nn.Linear(c.d_model, 3 * c.d_model), nn.Linear(c.d_model, c.d_model)
        self.fc, self.fc_proj = nn.Linear(c.d_model, 4 * c.d_model), nn.Linear(4 * c.d_model, c.d_model)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class PlainGPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.tok, self.pos = nn.Embedding(c.vocab_size, c.d_model), nn.Embedding(c.context_length, c.d_model)
        self.blocks = nn.ModuleList(PlainBlock(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied, as in GPT-2
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx, targets):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def plain_train(model, optimizer, data, steps, B, T, grad_clip):
    for _ in range(steps):
        starts = torch.randint(0, len(data) - T, (B,))
        offsets = torch.arange(T)
        x, y = data[starts[:, None] + offsets], data[starts[:, None] + offsets + 1]
        loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        loss.item()


# --- measurements --------------------------------------------------------------------------------

def matmul_peak(reps=5):
    """FLOP/s of the fastest of `reps` (N, N) @ (N, N) float32 matmuls."""
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    a @ b
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * MATMUL_N ** 3 / best


def main():
    torch.set_num_threads(THREADS)
    start_all = time.perf_counter()
    recipe = RECIPES["base"]
    config = GPTConfig(**recipe["model"])
    B, T = recipe["train"]["batch_size"], config.context_length
    t = recipe["train"]
    data = torch.randint(0, config.vocab_size, (N_DATA,), generator=torch.Generator().manual_seed(0))
    val = data[:4 * T]

    torch.manual_seed(0)
    ours = GPT(config)
    plain = PlainGPT(config)
    n_ours, n_plain = ours.num_params(), sum(p.numel() for p in plain.parameters())
    assert n_ours == n_plain, (n_ours, n_plain)
    decay = [p for p in plain.parameters() if p.dim() >= 2]
    no_decay = [p for p in plain.parameters() if p.dim() < 2]
    plain_opt = torch.optim.AdamW([{"params": decay, "weight_decay": t["weight_decay"]},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=t["max_lr"], betas=tuple(t["betas"]))

    def run_ours(steps, seed):
        # One train() call of `steps` steps; no evaluation, no checkpoint, no progress bar.
        cfg = TrainConfig(max_iters=steps, batch_size=B, max_lr=t["max_lr"], min_lr=t["min_lr"],
                          warmup_iters=min(t["warmup_iters"], steps - 2), weight_decay=t["weight_decay"],
                          betas=tuple(t["betas"]), grad_clip=t["grad_clip"], eval_interval=0,
                          seed=seed, progress=False)
        train(ours, data, val, cfg)

    def run_plain(steps, seed):
        torch.manual_seed(seed)
        plain.train()
        plain_train(plain, plain_opt, data, steps, B, T, t["grad_clip"])

    run_ours(WARMUP_STEPS + 2, 0)  # warm-up: allocations, optimizer state, kernel selection
    run_plain(WARMUP_STEPS + 2, 0)
    peaks = [matmul_peak()]
    times, cpu = {"ours": [], "plain": []}, {"ours": [], "plain": []}
    for r in range(REPS):
        order = [("ours", run_ours), ("plain", run_plain)]
        for name, fn in (order if r % 2 == 0 else order[::-1]):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn(STEPS, r + 1)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
        peaks.append(matmul_peak())
    peak = max(peaks)

    fpt = flops_per_token(config, training=True)
    tokens = STEPS * B * T
    rows = {}
    for name in ("ours", "plain"):
        tps = tokens / min(times[name])
        rows[name] = (tps, fpt * tps / peak)
    ratio = rows["ours"][0] / rows["plain"][0]
    cpu_ratio = min(cpu["plain"]) / min(cpu["ours"])
    lines = ["## train: training throughput and MFU (float32, CPU)", "",
             f"`python benchmarks/bench_train.py`, torch {torch.__version__}, torch.set_num_threads({THREADS}). "
             f"Base model config ({n_ours / 1e6:.2f}M parameters: {config.n_layer} layers, d_model={config.d_model}, "
             f"{config.n_head} heads, vocab {config.vocab_size}), batch {B} × context {T}, random token ids. "
             f"Each run is {STEPS} optimizer steps ({tokens:,} tokens); fastest of {REPS} interleaved runs each. "
             f"MFU = flops_per_token(config, training=True) = {fpt / 1e6:.1f} MFLOP/token × tokens/s, divided by "
             f"the peak measured in the same run: the fastest {MATMUL_N}×{MATMUL_N} float32 matmul, "
             f"{peak / 1e9:.1f} GFLOP/s. Goal: course / plain ≥ 1.0x.", "",
             "| trainer | tokens/s | MFU | ms / step (wall) | CPU ms / step |",
             "|---|---:|---:|---:|---:|",
             f"| course: `llm_lib.train.train` (llm_lib GPT + llm_lib AdamW, lr schedule, clip, logging) | "
             f"{rows['ours'][0]:,.0f} | {rows['ours'][1]:.1%} | {min(times['ours']) / STEPS * 1e3:.0f} | "
             f"{min(cpu['ours']) / STEPS * 1e3:.0f} |",
             f"| plain PyTorch loop (nanoGPT-style, `torch.optim.AdamW`, clip) | "
             f"{rows['plain'][0]:,.0f} | {rows['plain'][1]:.1%} | {min(times['plain']) / STEPS * 1e3:.0f} | "
             f"{min(cpu['plain']) / STEPS * 1e3:.0f} |",
             "",
             f"Course / plain throughput: **{ratio:.2f}x** ({'PASS' if ratio >= 1.0 else 'MISS'}: goal ≥ 1.0x); "
             f"by CPU time per step {cpu_ratio:.2f}x. "
             f"Run-to-run spread (slowest / fastest run): course {max(times['ours']) / min(times['ours']):.2f}, "
             f"plain {max(times['plain']) / min(times['plain']):.2f}; matmul peak spread "
             f"{max(peaks) / min(peaks):.2f} on this shared machine."]
    markdown = "\n".join(lines)
    print(f"\n({time.perf_counter() - start_all:.0f} s)")
    write_section("train", markdown)
    track_base_quality()


HISTORY = Path(__file__).with_name("base_quality.csv")
FIELDS = ["date", "commit", "recipe", "data", "params", "tokens_seen", "val_bits_per_byte", "val_loss",
          "wall_minutes", "cpu_minutes"]


def track_base_quality():
    """One row per base-model recipe the project has shipped: held-out bits per byte against the
    minutes it cost to train (CPU minutes when the manifest has them, wall otherwise)."""
    import csv
    import hashlib
    import json
    import subprocess
    from datetime import date

    from llm_lib.data import atomic_write
    from llm_lib.pipeline import artifact_dir, is_current

    if not is_current("base"):
        print("no current base model in the cache (python -m llm_lib.pipeline base): quality not tracked")
        return
    manifest = json.loads((artifact_dir("base") / "manifest.json").read_text())
    stats = manifest["stats"]
    recipe = hashlib.sha256(json.dumps(manifest["recipe"], sort_keys=True).encode()).hexdigest()[:12]
    rows = list(csv.DictReader(HISTORY.open())) if HISTORY.exists() else []
    if recipe not in {r["recipe"] for r in rows}:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
        cpu = manifest.get("cpu_seconds")
        data = manifest["recipe"]["corpus"]
        rows.append({"date": date.today().isoformat(), "commit": commit or "?", "recipe": recipe,
                     "data": "curated corpus (chapter 1)" if isinstance(data, dict) else data,
                     "params": stats["params"], "tokens_seen": stats["tokens_seen"],
                     "val_bits_per_byte": stats["val_bits_per_byte"], "val_loss": stats["val_loss"],
                     "wall_minutes": round(manifest["seconds"] / 60, 1),
                     "cpu_minutes": "" if cpu is None else round(cpu / 60, 1)})
        out = io.StringIO()
        writer = csv.DictWriter(out, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(HISTORY, out.getvalue())
    table = "\n".join(f"| {r['date']} | {r['commit']} | `{r['recipe']}` | {r['data']} | {int(r['params']) / 1e6:.2f}M | "
                      f"{int(r['tokens_seen']) / 1e6:.2f}M | {float(r['val_bits_per_byte']):.3f} | "
                      f"{r['cpu_minutes'] or '—'} | {r['wall_minutes']} |" for r in rows)
    write_section("base-quality", f"""## Course base model: quality per CPU-minute, release to release

`python benchmarks/bench_train.py` adds a row to `benchmarks/base_quality.csv` whenever the base
recipe (`llm_lib.pipeline.RECIPES["base"]`) changes: held-out bits per byte (Macbeth and Twelfth Night,
lower is better) against what the model cost to train, read from the cached artifact's manifest. A
recipe change should buy lower bits per byte or the same for fewer minutes. Wall minutes depend on
what else ran on the machine; CPU minutes (all threads of the training process) do much less. Bits
per byte compare only between rows with the same training data: the held-out text itself changed when
the base model moved to the curated corpus (cleaner layout, and a tokenizer that never saw it).

| date | commit | recipe | data | parameters | tokens seen | held-out bits/byte | CPU minutes | wall minutes |
|---|---|---|---|---:|---:|---:|---:|---:|
{table}
""")


if __name__ == "__main__":
    main()

"""LoRA vs full fine-tuning of the course base model: step time, trainable numbers, memory.

    .venv/bin/python benchmarks/bench_lora.py      # ~2 minutes; rewrites the "lora" section of RESULTS.md

Both run `llm_lib.sft.train_sft` (llm_lib's AdamW, cosine lr, clip, response-only loss) on the base
model's config with the SFT recipe's batch and context (llm_lib.pipeline.RECIPES["sft"]), on random
token ids (speed and memory do not depend on the data). LoRA: `add_lora(r=8, alpha=16)` on qkv,
proj and fc, everything else frozen. Each mode runs in a fresh process, so its peak resident memory
(ru_maxrss) is its own; "training state" counts the tensors training must keep beside the weights:
gradients and AdamW's two moments of every trainable parameter.
"""
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402

STEPS = 10   # timed steps per run
REPS = 3     # runs per mode; the fastest counts
RANK, ALPHA = 8, 16

CHILD = r'''
import json, resource, sys, time
import torch
from llm_lib.lora import add_lora, count_trainable
from llm_lib.model import GPT, GPTConfig
from llm_lib.pipeline import RECIPES
from llm_lib.sft import train_sft

mode, steps, reps, rank, alpha = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
torch.set_num_threads(2)
torch.manual_seed(0)
model = GPT(GPTConfig(**RECIPES["base"]["model"]))
if mode == "lora":
    add_lora(model, r=rank, alpha=alpha)
T, B = RECIPES["sft"]["data"]["context_length"], RECIPES["sft"]["train"]["batch_size"]
g = torch.Generator().manual_seed(0)
examples = []
for _ in range(256):
    ids = torch.randint(4, 4096, (T,), generator=g).tolist()
    examples.append((ids, [-100] * (T // 2) + ids[T // 2:]))  # loss on the second half, like a response
run = lambda n: train_sft(model, examples, n, batch_size=B, warmup=1, progress=False)
run(2)  # warm-up: optimizer state, allocations
times = []
for r in range(reps):
    start = time.perf_counter()
    run(steps)
    times.append((time.perf_counter() - start) / steps)
trainable, total = count_trainable(model)
state = sum(p.numel() * p.element_size() * 3 for p in model.parameters() if p.requires_grad)  # grad + 2 moments
print(json.dumps({"step_s": min(times), "trainable": trainable, "total": total, "state_bytes": state,
                  "weights_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
                  "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
'''


def measure(mode: str) -> dict:
    run = subprocess.run([sys.executable, "-c", CHILD, mode, str(STEPS), str(REPS), str(RANK), str(ALPHA)],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(run.stdout.strip().splitlines()[-1])


def main():
    full, lora = measure("full"), measure("lora")
    mib = 1024 * 1024

    def row(name, m):
        return (f"| {name} | {m['trainable']:,} ({m['trainable'] / m['total']:.1%}) | {m['step_s'] * 1e3:.0f} | "
                f"{m['state_bytes'] / mib:.1f} | {m['peak_rss_kib'] / 1024:.0f} |")

    write_section("lora", f"""## LoRA vs full fine-tuning (`benchmarks/bench_lora.py`)

The course base model's config ({full['total'] / 1e6:.2f}M parameters, {full['weights_bytes'] / mib:.1f} MiB of
float32 weights), SFT recipe batch and context, `llm_lib.sft.train_sft`, 2 threads; fastest of {REPS} runs of
{STEPS} steps. LoRA r={RANK}, alpha={ALPHA} on qkv, proj and fc. Training state = gradients + AdamW moments of
the trainable parameters; peak RSS = the whole process (Python, torch, weights, activations), each mode in its
own process.

| mode | trainable parameters | ms / step | training state (MiB) | peak RSS (MiB) |
|---|---:|---:|---:|---:|
{row("full fine-tuning", full)}
{row(f"LoRA r={RANK}", lora)}

LoRA / full: step time {lora['step_s'] / full['step_s']:.2f}x, training state {lora['state_bytes'] / full['state_bytes']:.3f}x,
peak RSS {lora['peak_rss_kib'] / full['peak_rss_kib']:.2f}x. At this size the frozen weights, the
activations and torch itself dominate the process, so LoRA's saving shows in the training state
(what grows with the model: 3 extra copies of every trained number) far more than in the total. The
step costs nearly as much as full fine-tuning: the backward pass still runs through every frozen layer
to reach the adapters of the layers below; only the weight-gradient products and the optimizer update
of the frozen matrices are saved.
""")


if __name__ == "__main__":
    main()

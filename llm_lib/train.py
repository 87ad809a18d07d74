"""Pretraining: batches, held-out loss, checkpoints and the training loop (one process or DDP).

    >>> history = train(model, train_ids, val_ids, TrainConfig(max_iters=200))
    >>> plt.plot(history["iter"], history["loss"]); plt.plot(history["eval_iter"], history["val_loss"])

The loop is AdamW (llm_lib.optim) with linear warmup then cosine decay (cosine_lr), one global
gradient-norm clip per step, a held-out evaluation every `eval_interval` steps and a checkpoint
every `checkpoint_interval` steps. It is deterministic: the batch of step `it` is drawn from a
generator seeded with (seed, it), so a run that stops and resumes from a checkpoint sees the same
batches as one that never stopped, and N processes under DDP see the same global batch as one.

Checkpoints are one safetensors file (never pickle, which runs code when loaded): the weights,
the optimizer's moments, and in its JSON metadata the step, the optimizer's hyperparameters and the
random number generators' states (torch, numpy, python), so resuming continues exactly.

Under `torchrun --nproc_per_node=N` (call `setup_distributed()` first) `train` wraps the model in
DistributedDataParallel: every rank draws the same global batch of `batch_size` sequences and
trains on its own slice of it; DDP averages the gradients, so each step is the step one process
would take on the whole batch. Only rank 0 writes checkpoints and shows the progress bar.

Shapes: B batch (sequences), T context_length (tokens per sequence).
"""
from __future__ import annotations

import json
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch.nn.parallel import DistributedDataParallel

from llm_lib.data import atomic_write
from llm_lib.optim import AdamW, clip_grad_norm_, cosine_lr

__all__ = ["get_batch", "evaluate", "save_checkpoint", "load_checkpoint", "read_checkpoint_extra",
           "save_model", "load_model", "TrainConfig", "train", "lr_schedule", "param_groups",
           "setup_distributed", "encode_works", "held_out_loss", "plot_history", "build_base_model"]

CHECKPOINT_FORMAT = "llm_lib.checkpoint/1"


# --- batches ------------------------------------------------------------------------------------

def _as_tensor(data, name="data"):
    """A 1-D int64 tensor view of token ids given as a tensor, numpy array (or memmap) or list."""
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(np.asarray(data, dtype=np.int64))
    elif not isinstance(data, torch.Tensor):
        data = torch.as_tensor(data, dtype=torch.long)
    if data.dim() != 1:
        raise ValueError(f"{name} must be a 1-D sequence of token ids, got shape {tuple(data.shape)}")
    if data.is_floating_point():
        raise TypeError(f"{name} must hold integer token ids, got dtype {data.dtype}")
    return data.long()


def _unwrap(model):
    """The model itself, also when DistributedDataParallel wraps it."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def get_batch(data, batch_size, context_length, device="cpu", generator=None):
    """Random windows of a token stream: inputs x (B, T) and targets y (B, T), y = x shifted by one.

    data: 1-D token ids (torch tensor, numpy array or memmap). Window i starts at a random offset s_i;
    x[i] = data[s_i : s_i + T] and y[i] = data[s_i + 1 : s_i + T + 1], so y[i, t] is the token that
    follows x[i, :t+1]: one batch gives B·T next-token predictions.

    >>> x, y = get_batch(torch.arange(100), 2, 4, generator=torch.Generator().manual_seed(0))
    >>> x.tolist(), y.tolist()
    ([[44, 45, 46, 47], [15, 16, 17, 18]], [[45, 46, 47, 48], [16, 17, 18, 19]])
    """
    for name, n in (("batch_size", batch_size), ("context_length", context_length)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be a positive int, got {n!r}")
    if isinstance(data, np.ndarray) and (data.ndim != 1 or not np.issubdtype(data.dtype, np.integer)):
        raise ValueError(f"data must be a 1-D array of integer token ids, got shape {data.shape} and dtype {data.dtype}")
    n = len(data)
    if n < context_length + 1:
        raise ValueError(f"data has {n} tokens but one window needs context_length + 1 = {context_length + 1} "
                         f"(T inputs plus the one target after them); use more data or a shorter context")
    # Every start s with s + T + 1 <= n is possible: n - T of them.
    starts = torch.randint(0, n - context_length, (batch_size,), generator=generator)  # (B,)
    if isinstance(data, np.ndarray):  # slice first: a memmap of a big corpus is never read whole
        x = torch.from_numpy(np.stack([data[s:s + context_length] for s in starts.tolist()]).astype(np.int64))
        y = torch.from_numpy(np.stack([data[s + 1:s + 1 + context_length] for s in starts.tolist()]).astype(np.int64))
    else:
        data = _as_tensor(data)
        starts = starts.to(data.device)
        offsets = torch.arange(context_length, device=data.device)  # (T,)
        x = data[starts[:, None] + offsets]       # (B, T)
        y = data[starts[:, None] + offsets + 1]   # (B, T)
    return x.to(device), y.to(device)


def _batch_generator(seed, it):
    """The generator that draws step `it`'s batch: a pure function of (seed, it), so resuming from a
    checkpoint, or splitting the batch over DDP ranks, needs no generator state to be carried around."""
    return torch.Generator().manual_seed(seed * 1_000_003 + it)


# --- evaluation ---------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model, data, batch_size=8, context_length=None, eval_iters=None, generator=None, device="cpu"):
    """Mean next-token cross-entropy (nats) of `model` on `data`, in eval mode (no dropout).

    eval_iters=None: every token of data after the first is predicted exactly once, from
      non-overlapping windows of context_length tokens (the held-out loss you report);
      the number of predictions is len(data) - 1.
    eval_iters=k: the mean over k random batches from get_batch(..., generator) (a cheap estimate
      for monitoring; pass a generator seeded the same way each time to compare like with like).

    >>> evaluate(model, val_ids)              # full pass
    >>> evaluate(model, val_ids, eval_iters=10, generator=torch.Generator().manual_seed(0))
    """
    raw = _unwrap(model)
    T = context_length or raw.config.context_length
    data = _as_tensor(data)
    was_training = raw.training
    raw.eval()
    total, count = 0.0, 0
    try:
        if eval_iters is not None:
            for _ in range(eval_iters):
                x, y = get_batch(data, batch_size, T, device, generator)
                logits = raw(x)  # (B, T, V)
                total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
                count += y.numel()
        else:
            if len(data) < 2:
                raise ValueError(f"data needs at least 2 tokens to predict one, got {len(data)}")
            starts = list(range(0, len(data) - 1, T))
            for i in range(0, len(starts), batch_size):
                chunk = starts[i:i + batch_size]
                # The last window may be short: pad its inputs with token 0 and its targets with -100,
                # which cross_entropy ignores.
                x = torch.zeros(len(chunk), T, dtype=torch.long)
                y = torch.full((len(chunk), T), -100, dtype=torch.long)
                for row, s in enumerate(chunk):
                    n = min(T, len(data) - 1 - s)
                    x[row, :n], y[row, :n] = data[s:s + n], data[s + 1:s + 1 + n]
                logits = raw(x.to(device))  # (B, T, V)
                total += F.cross_entropy(logits.flatten(0, 1), y.to(device).flatten(), ignore_index=-100,
                                         reduction="sum").item()
                count += int((y != -100).sum())
    finally:
        raw.train(was_training)
    return total / count


# --- checkpoints --------------------------------------------------------------------------------

def _model_tensors(model):
    """state_dict with each storage once: tied weights (the head sharing the embedding) would make
    safetensors refuse the file. Returns (tensors, aliases {dropped name: kept name})."""
    tensors, aliases, seen = {}, {}, {}
    for name, t in _unwrap(model).state_dict().items():
        key = (t.data_ptr(), t.shape, t.stride(), t.dtype) if t.numel() else None
        if key is not None and key in seen:
            aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        tensors[name] = t.detach().contiguous().cpu()
    return tensors, aliases


def _load_model_tensors(model, tensors, source):
    model = _unwrap(model)
    _, aliases = _model_tensors(model)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [m for m in missing if m not in aliases]  # tied weights come back with what they share
    if missing or unexpected:
        raise ValueError(f"{source} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}; "
                         f"build the model from the config it was saved with")


def save_model(model, path):
    """Weights only, as safetensors (tied weights stored once), written atomically.

    >>> save_model(model, "out/model.safetensors"); load_model(GPT(config), "out/model.safetensors")
    """
    tensors, _ = _model_tensors(model)
    atomic_write(path, safetensors_bytes(tensors, metadata={"format": "pt"}))


def save_stage_artifact(out, model, history, evaluation) -> None:
    """A trained post-training stage into its artifact folder: weights, config, history, evaluation.

    >>> save_stage_artifact(out, policy, history, {"win_rate": 0.6})  # model.safetensors, config.json, ...
    """
    out = Path(out)
    save_model(model, out / "model.safetensors")
    atomic_write(out / "config.json", json.dumps(asdict(model.config), indent=2) + "\n")
    atomic_write(out / "history.json", json.dumps(history) + "\n")
    atomic_write(out / "eval.json", json.dumps(evaluation, indent=1) + "\n")


def load_model(model, path):
    """Load weights written by save_model into `model` (same config); returns the model."""
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    _load_model_tensors(model, tensors, path)
    return model


def _rng_state():
    """The global random number generators' states, JSON-friendly except torch's (a uint8 tensor)."""
    np_state = np.random.get_state()  # ('MT19937', keys (624,) uint32, pos, has_gauss, cached_gaussian)
    py_state = random.getstate()      # (version, tuple of 625 ints, gauss_next)
    meta = {"numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": [py_state[0], list(py_state[1]), py_state[2]]}
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return tensors, meta


def _set_rng_state(tensors, meta):
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[f"rng.cuda.{i}"] for i in range(len(tensors)) if f"rng.cuda.{i}" in tensors]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    name, keys, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(model, optimizer, iteration, path, **extra):
    """Save everything needed to resume training into ONE safetensors file, atomically.

    Tensors: "model.<name>" (weights, tied ones once), "optim.<param index>.<key>" (AdamW's moments),
    "rng.torch". Metadata (JSON): iteration, optimizer hyperparameters and scalar state, numpy and
    python RNG states, and `extra` (any JSON-serialisable values, e.g. the loss history).
    The file is written to a temporary name and renamed: a crash mid-save leaves the old one intact.

    >>> save_checkpoint(model, opt, 100, "ckpt.safetensors", history=history)
    """
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise ValueError(f"iteration must be an int >= 0, got {iteration!r}")
    weights, _ = _model_tensors(model)
    tensors = {f"model.{k}": v for k, v in weights.items()}
    optim_meta = None
    if optimizer is not None:
        sd = optimizer.state_dict()  # {"state": {index: {key: value}}, "param_groups": [...]}
        scalars = {}
        for index, state in sd["state"].items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{index}.{key}"] = value.detach().contiguous().cpu()
                else:
                    scalars.setdefault(str(index), {})[key] = value
        optim_meta = {"param_groups": sd["param_groups"], "scalars": scalars}
    rng_tensors, rng_meta = _rng_state()
    tensors.update(rng_tensors)
    try:
        extra_json = json.dumps(extra)
        optim_json = json.dumps(optim_meta)
    except TypeError as e:
        raise TypeError(f"checkpoint extras and optimizer settings must be JSON-serialisable: {e}") from e
    metadata = {"format": CHECKPOINT_FORMAT, "iteration": str(iteration), "optimizer": optim_json,
                "rng": json.dumps(rng_meta), "extra": extra_json}
    atomic_write(path, safetensors_bytes(tensors, metadata=metadata))
    return Path(path)


def _read_checkpoint(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not an llm_lib checkpoint (format {metadata.get('format')!r}); "
                             f"weights-only files load with load_model")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, metadata


def load_checkpoint(path, model, optimizer=None):
    """Restore weights, optimizer state and RNG states from save_checkpoint; return the iteration.

    >>> start = load_checkpoint("ckpt.safetensors", model, opt)  # continue training at step `start`
    """
    tensors, metadata = _read_checkpoint(path)
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    _load_model_tensors(model, weights, path)
    if optimizer is not None:
        optim_meta = json.loads(metadata["optimizer"])
        if optim_meta is None:
            raise ValueError(f"{path} was saved without an optimizer; call load_checkpoint(path, model)")
        state = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        for index, scalars in optim_meta["scalars"].items():
            state.setdefault(int(index), {}).update(scalars)
        optimizer.load_state_dict({"state": state, "param_groups": optim_meta["param_groups"]})
    _set_rng_state(tensors, json.loads(metadata["rng"]))
    return int(metadata["iteration"])


def read_checkpoint_extra(path):
    """The **extra values a checkpoint was saved with (e.g. its loss history), as a dict."""
    _, metadata = _read_checkpoint(path)
    return json.loads(metadata["extra"])


# --- distributed --------------------------------------------------------------------------------

def setup_distributed(backend=None):
    """Join the process group torchrun describes (RANK, WORLD_SIZE... in the environment).

    Returns (rank, world_size); (0, 1) when not launched by torchrun. backend: "gloo" on CPU
    (the default without CUDA), "nccl" on GPUs.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    return dist.get_rank(), dist.get_world_size()


def _rank_and_world():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# --- the training loop --------------------------------------------------------------------------

@dataclass
class TrainConfig:
    """How to train. batch_size is the GLOBAL batch (sequences per step, summed over DDP ranks)."""

    max_iters: int = 1000
    batch_size: int = 16
    context_length: int | None = None   # None: the model's context_length
    max_lr: float = 1e-3
    min_lr: float = 1e-4                # cosine floor, reached at max_iters
    warmup_iters: int = 50
    weight_decay: float = 0.1           # on matrices only, not on biases and norm gains
    betas: tuple = (0.9, 0.95)
    grad_clip: float | None = 1.0       # global gradient-norm clip; None: off
    eval_interval: int = 100            # evaluate every this many steps (and at the end); 0: never
    eval_iters: int = 10                # batches per evaluation (same windows each time)
    eval_batch_size: int | None = None  # None: batch_size
    seed: int = 1337
    checkpoint_path: str | None = None  # where to save and resume from; None: no checkpoints
    checkpoint_interval: int = 0        # save every this many steps (and at the end); 0: only at the end
    resume: bool = True                 # continue from checkpoint_path if it exists
    stop_after: int | None = None       # end this call after this step (saving a checkpoint), as if
                                        # interrupted; the schedule still runs to max_iters on resume
    progress: bool = True               # tqdm progress bar (rank 0 only)
    device: str = "cpu"
    extra: dict = field(default_factory=dict)  # stored in checkpoints, e.g. the data recipe


def param_groups(model, weight_decay):
    """Two AdamW groups: decay matrices (Linear, Embedding weights), not biases and norm gains.

    Weight decay pulls weights toward 0; on a 1-D gain or bias that only fights the normalisation.
    """
    params = [p for p in _unwrap(model).parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def _empty_history():
    # Per step: iter, loss (this step's training batch, before the update), lr, grad_norm.
    # Per evaluation: eval_iter, train_loss and val_loss (the same fixed windows each time).
    return {"iter": [], "loss": [], "lr": [], "grad_norm": [], "eval_iter": [], "train_loss": [], "val_loss": []}


def train(model, train_data, val_data, config: TrainConfig, optimizer=None):
    """Train `model` (a GPT) on train_data, evaluating on val_data; returns the history dict.

    Returns {"iter", "loss", "lr", "grad_norm"} per step and {"eval_iter", "train_loss", "val_loss"}
    per evaluation, lists ready for plotting. With config.checkpoint_path it saves there and, if a
    checkpoint exists, resumes from it (history included) exactly where it stopped.
    Under torchrun (after setup_distributed()) it trains with DistributedDataParallel.
    optimizer: by default AdamW over param_groups(model, weight_decay); its lr is set by the
    schedule (lr_schedule(config)) at every step.
    """
    if config.max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {config.max_iters}")
    rank, world = _rank_and_world()
    if config.batch_size % world:
        raise ValueError(f"batch_size={config.batch_size} (the global batch) must be divisible by the "
                         f"number of processes ({world}) so every rank gets the same share")
    raw = _unwrap(model).to(config.device)
    T = config.context_length or raw.config.context_length
    if T > raw.config.context_length:
        raise ValueError(f"context_length={T} exceeds the model's context_length={raw.config.context_length}")
    train_data, val_data = _as_tensor(train_data, "train_data"), _as_tensor(val_data, "val_data")
    for name, d in (("train_data", train_data), ("val_data", val_data)):
        if len(d) < T + 1:
            raise ValueError(f"{name} has {len(d)} tokens; a window of context_length={T} needs {T + 1}")
    if optimizer is None:
        optimizer = AdamW(param_groups(raw, config.weight_decay), lr=config.max_lr, betas=config.betas)
    # DDP broadcasts rank 0's weights at construction, then averages gradients in backward().
    net = DistributedDataParallel(raw) if world > 1 and not isinstance(model, DistributedDataParallel) else model
    local = config.batch_size // world  # this rank's rows of the global batch

    start, history = 0, _empty_history()
    ckpt = Path(config.checkpoint_path) if config.checkpoint_path else None
    if ckpt is not None and config.resume and ckpt.exists():
        start = load_checkpoint(ckpt, raw, optimizer)
        history = read_checkpoint_extra(ckpt).get("history", history)

    def save(it):
        if ckpt is not None and rank == 0:
            save_checkpoint(raw, optimizer, it, ckpt, history=history, train_config=_json_config(config),
                            **config.extra)
        if world > 1:
            dist.barrier()  # nobody reads or overwrites the file before it is complete

    def run_eval(it):
        eval_bs = config.eval_batch_size or config.batch_size
        # A fresh generator with a fixed seed: the same windows each time, so the curve shows the
        # model improving, not the noise of which windows were drawn.
        losses = [evaluate(raw, d, eval_bs, T, config.eval_iters, torch.Generator().manual_seed(config.seed + k),
                           config.device) for k, d in ((1, train_data), (2, val_data))]
        history["eval_iter"].append(it)
        history["train_loss"].append(losses[0])
        history["val_loss"].append(losses[1])

    lrs = lr_schedule(config)
    bar = None
    if config.progress and rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.max_iters, initial=start, desc="train", unit="step", dynamic_ncols=True)
    net.train()
    end = config.max_iters if config.stop_after is None else min(config.stop_after, config.max_iters)
    for it in range(start, end):
        if config.eval_interval and it % config.eval_interval == 0 and it not in history["eval_iter"]:
            run_eval(it)
        lr = lrs[it]
        for group in optimizer.param_groups:
            group["lr"] = lr
        # Every rank draws the same global batch and keeps its own rows.
        x, y = get_batch(train_data, config.batch_size, T, generator=_batch_generator(config.seed, it))
        x, y = x[rank * local:(rank + 1) * local].to(config.device), y[rank * local:(rank + 1) * local].to(config.device)
        _, loss = net(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # under DDP: gradients averaged over ranks = gradient of the global batch mean
        grad_norm = clip_grad_norm_(raw.parameters(), config.grad_clip) if config.grad_clip else _grad_norm(raw)
        optimizer.step()

        step_loss = loss.detach()
        if world > 1:  # log the loss of the whole global batch, as one process would
            dist.all_reduce(step_loss)
            step_loss = step_loss / world
        history["iter"].append(it)
        history["loss"].append(step_loss.item())
        history["lr"].append(lr)
        history["grad_norm"].append(float(grad_norm))
        if bar is not None:
            postfix = {"loss": f"{history['loss'][-1]:.3f}", "lr": f"{lr:.2e}"}
            if history["val_loss"]:
                postfix["val"] = f"{history['val_loss'][-1]:.3f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
        if config.checkpoint_interval and (it + 1) % config.checkpoint_interval == 0 and it + 1 < end:
            save(it + 1)
    if end == config.max_iters and config.eval_interval and end not in history["eval_iter"]:
        run_eval(end)
    if bar is not None:
        bar.close()
    if start < end:
        save(end)
    return history


@torch.no_grad()
def _grad_norm(model):
    grads = [p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None]
    return torch.stack(grads).sum().sqrt() if grads else torch.tensor(0.0)


def _json_config(config):
    d = asdict(config)
    d["betas"] = list(d["betas"])
    return d


def lr_schedule(config: TrainConfig):
    """The learning rate of every step: warmup to max_lr, cosine down to min_lr at the last step.

    >>> lr_schedule(TrainConfig(max_iters=5, warmup_iters=2, max_lr=1.0, min_lr=0.0))
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    end = max(config.max_iters - 1, config.warmup_iters + 1)  # cosine_lr wants its end after warmup
    return [cosine_lr(it, config.max_lr, config.min_lr, config.warmup_iters, end) for it in range(config.max_iters)]


# --- the course base model (pipeline stage "base") ----------------------------------------------

EOT = "<|endoftext|>"


def encode_works(tokenizer, texts):
    """Token ids of several documents, each preceded by <|endoftext|>: the model learns that what
    follows that token is the start of a new work, and a prompt of just [eot] asks for one."""
    return torch.tensor(tokenizer.encode("".join(EOT + t for t in texts)), dtype=torch.long)


def held_out_loss(model, tokenizer, texts, batch_size=8):
    """Loss on whole documents: each is encoded after <|endoftext|> and every one of its tokens is
    predicted once. Returns (mean loss in nats per token, n_tokens, n_bytes), n_bytes = UTF-8 bytes of
    the texts, ready for losses.bits_per_byte(loss, n_tokens, n_bytes)."""
    total, n_tokens = 0.0, 0
    for text in texts:
        ids = encode_works(tokenizer, [text])  # (1 + n,): eot, then the work
        loss = evaluate(model, ids, batch_size=batch_size)  # mean over the n tokens after eot
        total += loss * (len(ids) - 1)
        n_tokens += len(ids) - 1
    return total / n_tokens, n_tokens, sum(len(t.encode("utf-8")) for t in texts)


def plot_history(history, path=None, title="Training loss"):
    """A matplotlib Figure of the loss curves (per-step train loss, periodic train/val estimates).
    Uses the object-oriented API (no pyplot), so it never changes a notebook's backend."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=110)
    ax = fig.add_subplot()
    ax.plot(history["iter"], history["loss"], color="tab:blue", alpha=0.3, lw=1, label="train (each batch)")
    ax.plot(history["eval_iter"], history["train_loss"], "o-", color="tab:blue", ms=3, label="train (estimate)")
    ax.plot(history["eval_iter"], history["val_loss"], "o-", color="tab:orange", ms=3, label="held-out plays")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def build_base_model(out, recipe, tokenizer, texts):
    """Train the course base model from `recipe` (pipeline.RECIPES["base"]) into folder `out`.

    texts: {work name: text}; the works in recipe["held_out"] are the validation set, never trained on.
    Writes model.safetensors, config.json, history.json, samples.txt, loss.png; returns stats.
    """
    import time

    from llm_lib.losses import bits_per_byte
    from llm_lib.model import GPT, GPTConfig
    from llm_lib.sampling import generate

    out = Path(out)
    missing = sorted(set(recipe["held_out"]) - set(texts))
    if missing:
        raise ValueError(f"held-out works {missing} are not in the corpus; choose from {sorted(texts)}")
    train_texts = [t for name, t in texts.items() if name not in recipe["held_out"]]
    val_texts = [texts[name] for name in recipe["held_out"]]
    train_ids, val_ids = encode_works(tokenizer, train_texts), encode_works(tokenizer, val_texts)

    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)  # the laptop is ours for these minutes
    try:
        torch.manual_seed(recipe["seed"])
        config = GPTConfig(**recipe["model"])
        model = GPT(config)
        start = time.perf_counter()
        history = train(model, train_ids, val_ids, TrainConfig(**recipe["train"], seed=recipe["seed"]))
        train_seconds = time.perf_counter() - start
        val_loss, n_tokens, n_bytes = held_out_loss(model, tokenizer, val_texts)
        model.eval()
        samples = []
        for k, prompt in enumerate(recipe["sample_prompts"]):
            ids = generate(model, tokenizer.encode(EOT + prompt), recipe["sample_tokens"], temperature=0.8, top_k=50,
                           generator=torch.Generator().manual_seed(recipe["seed"] + k))
            samples.append(tokenizer.decode(ids[1:]))  # drop the leading eot
    finally:
        torch.set_num_threads(threads)

    save_model(model, out / "model.safetensors")
    atomic_write(out / "config.json", json.dumps(asdict(config), indent=2) + "\n")
    atomic_write(out / "history.json", json.dumps(history) + "\n")
    rule = "\n" + "-" * 72 + "\n"
    atomic_write(out / "samples.txt", rule.join(samples) + "\n")
    plot_history(history, out / "loss.png", title=f"Base model: {model.num_params() / 1e6:.1f}M parameters")
    return {"params": model.num_params(), "train_tokens": len(train_ids), "val_tokens": n_tokens,
            "val_bytes": n_bytes, "held_out": recipe["held_out"], "steps": recipe["train"]["max_iters"],
            "tokens_seen": recipe["train"]["max_iters"] * recipe["train"]["batch_size"] * config.context_length,
            "train_loss": round(history["train_loss"][-1], 4), "val_loss": round(val_loss, 4),
            "val_perplexity": round(math.exp(val_loss), 2),
            "val_bits_per_byte": round(bits_per_byte(val_loss, n_tokens, n_bytes), 4),
            "train_seconds": round(train_seconds, 1), "threads": os.cpu_count()}

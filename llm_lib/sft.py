"""Supervised fine-tuning (SFT): turn a text-continuing base model into one that answers in a chat template.

    >>> format_chat("What is 3 plus 4?", "7")
    '<|user|>What is 3 plus 4?<|end|><|assistant|>7<|end|>'
    >>> chat(load("sft"), load("tokenizer"), "Repeat after me: king rose")   # the reply, cut at <|end|>
    'king rose'

SFT is the pretraining loss on different data: (prompt, ideal response) pairs written in a chat
template, with the loss counted on the response tokens only (the prompt's labels are -100, which
`torch.nn.functional.cross_entropy(ignore_index=-100)` skips). The model is not taught what a
*wrong* answer is; it is only shown what a right one looks like.

The data of the course's SFT model (pipeline stage "sft", `build_sft_model`):
- single-turn pairs from the dialogues of the chatterbot-corpus package (each utterance and its reply),
- generated tasks with one checkable answer (`make_tasks`): single-digit addition, repeating words,
  picking the bigger of two numbers. A fixed hash of each task decides its split, so the train and
  test splits never share a prompt, and `is_correct` grades a reply automatically.

Shapes: B batch (examples), T positions, V vocabulary.
"""
from __future__ import annotations

import os
import random
import re
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["USER", "ASSISTANT", "END", "IGNORE_INDEX", "format_chat", "encode_example", "collate",
           "response_loss", "labels_html", "Task", "make_tasks", "is_correct", "chat", "generate_replies",
           "chatterbot_pairs", "split_of", "sft_examples", "train_sft", "evaluate_replies", "build_sft_model"]

USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"
PAD = "<|endoftext|>"  # fills short rows of a batch; never trained on (its label is IGNORE_INDEX)
IGNORE_INDEX = -100    # the label cross_entropy skips (PyTorch's and Hugging Face's convention)


# --- the chat template ----------------------------------------------------------------------------

def format_chat(prompt: str, response: str | None = None) -> str:
    """The chat template: the user's turn, then the assistant's (closed by <|end|> when given).

    >>> format_chat("Hi")
    '<|user|>Hi<|end|><|assistant|>'
    >>> format_chat("Hi", "Hello!")
    '<|user|>Hi<|end|><|assistant|>Hello!<|end|>'
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if response is not None and not isinstance(response, str):
        raise TypeError(f"response must be a str or None, got {type(response).__name__}")
    for name, text in (("prompt", prompt), ("response", response or "")):
        for special in (USER, ASSISTANT, END, PAD):
            if special in text:
                raise ValueError(f"{name} contains the special token {special}: it would break the template")
    text = USER + prompt + END + ASSISTANT
    return text if response is None else text + response + END


def _special_id(tok, name):
    try:
        return tok.special_tokens[name]
    except (AttributeError, KeyError):
        raise ValueError(f"the tokenizer has no special token {name}; use the course tokenizer, "
                         f"load('tokenizer'), which reserves {USER} {ASSISTANT} {END}") from None


def encode_example(tok, prompt: str, response: str, context_length: int) -> tuple[list[int], list[int]]:
    """Token ids of format_chat(prompt, response) and their labels: IGNORE_INDEX (-100) on the prompt
    (<|user|> ... <|assistant|>), the token id itself on the response and its closing <|end|>.

    Labels are aligned with ids (the Hugging Face convention): the loss shifts them, so position t's
    logits are scored against labels[t + 1] (see `collate`). The sequence is cut to context_length
    tokens; a cut response loses its tail (and its <|end|>). The prompt must leave room for at least
    one response token.

    >>> ids, labels = encode_example(tok, "Hi", "Hello!", 256)
    >>> [tok.decode([i]) if l == -100 else f"[{tok.decode([i])}]" for i, l in zip(ids, labels)]
    ['<|user|>', 'H', 'i', '<|end|>', '<|assistant|>', '[H]', '[ell]', '[o]', '[!]', '[<|end|>]']
    """
    if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 2:
        raise ValueError(f"context_length must be an int >= 2, got {context_length!r}")
    if not isinstance(response, str):
        raise TypeError(f"response must be a str, got {type(response).__name__}")
    prompt_ids = tok.encode(format_chat(prompt))                    # <|user|> prompt <|end|><|assistant|>
    response_ids = tok.encode(response) + [_special_id(tok, END)]   # response <|end|>
    if len(prompt_ids) >= context_length:
        raise ValueError(f"the prompt takes {len(prompt_ids)} tokens, leaving no room for a response in "
                         f"context_length={context_length}; shorten the prompt")
    ids = (prompt_ids + response_ids)[:context_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:context_length]
    return ids, labels


def collate(examples, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch from (ids, labels) pairs: inputs x (B, T) and targets y (B, T) for GPT.forward(x, y).

    x[i] = ids[:-1] and y[i] = labels[1:] (target t is the token after position t), with T the
    longest row minus one; shorter rows are padded on the right with pad_id in x and -100 in y, so
    padding is never trained on (and causal attention keeps real tokens from seeing it).

    >>> x, y = collate([([5, 6, 7], [-100, 6, 7]), ([5, 8], [-100, 8])], pad_id=0)
    >>> x.tolist(), y.tolist()
    ([[5, 6], [5, 0]], [[6, 7], [8, -100]])
    """
    if not examples:
        raise ValueError("collate needs at least one (ids, labels) example")
    for k, (ids, labels) in enumerate(examples):
        if len(ids) != len(labels):
            raise ValueError(f"example {k}: ids has {len(ids)} tokens but labels has {len(labels)}; "
                             f"they must be aligned one label per token")
        if len(ids) < 2:
            raise ValueError(f"example {k} has {len(ids)} token(s); a next-token target needs at least 2")
    T = max(len(ids) for ids, _ in examples) - 1
    x = torch.full((len(examples), T), pad_id, dtype=torch.long)
    y = torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)
    for i, (ids, labels) in enumerate(examples):
        n = len(ids) - 1
        x[i, :n] = torch.as_tensor(ids[:-1], dtype=torch.long)
        y[i, :n] = torch.as_tensor(labels[1:], dtype=torch.long)
    return x, y


def response_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the trained (response) positions only: targets == -100 are skipped.

    logits (B, T, V), targets (B, T). Every response token counts once, so a batch's long answers
    weigh more than its short ones (the usual SFT convention, as in transformers' Trainer).
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"logits must be (B, T, V) and targets (B, T); got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    if not (targets != IGNORE_INDEX).any():
        raise ValueError("every target is -100: the batch has no response token to train on")
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)


def labels_html(tok, ids, labels) -> str:
    """HTML of one example's tokens: grey = masked (label -100, no loss), green = trained on.
    `IPython.display.HTML(labels_html(tok, *encode_example(tok, "Hi", "Hello!", 64)))`"""
    import html as html_lib

    from llm_lib.display import _bpe_token_bytes, _piece_label

    if len(ids) != len(labels):
        raise ValueError(f"ids ({len(ids)}) and labels ({len(labels)}) must have the same length")
    spans = []
    for token_id, label in zip(ids, labels):
        text, tooltip = _piece_label(_bpe_token_bytes(tok, token_id))
        trained = label != IGNORE_INDEX
        background, border = ("#b3e2d5", "#009e73") if trained else ("#e8e8e8", "#9a9a9a")
        state = "trained: loss on this token" if trained else "masked: label -100, no loss"
        spans.append(f'<span title="{state} (id {token_id}, {html_lib.escape(tooltip)})" style="display:inline-block;'
                     f"margin:1px 1px 3px 0;padding:0 2px;background:{background};border:1px solid {border};"
                     f'border-radius:3px;color:#111;white-space:pre;{"font-weight:bold;" if trained else ""}">'
                     f"{text}</span>")
    n_trained = sum(label != IGNORE_INDEX for label in labels)
    return ('<div style="font-family:ui-monospace,Menlo,Consolas,monospace;font-size:0.9em;line-height:1.5">'
            f'{"".join(spans)}<div style="font-size:0.8em;color:#555">{len(ids)} tokens: '
            f"{len(ids) - n_trained} masked (grey), {n_trained} trained (green)</div></div>")


# --- checkable tasks ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    """A prompt with one automatically checkable answer; kind names the family ("add", "repeat", "bigger")."""

    prompt: str
    answer: str
    kind: str = ""


WORDS = ("king", "queen", "house", "water", "fire", "stone", "light", "green", "red", "gold", "silver", "horse",
         "dog", "cat", "moon", "sun", "star", "book", "door", "rain", "wind", "night", "day", "sword", "crown",
         "ship", "sea", "rose", "wine", "field", "song", "river", "apple", "bird", "bread", "cloud")
TASK_KINDS = ("add", "repeat", "bigger")
TEST_FRACTION = 0.2


def split_of(key: str) -> str:
    """"test" for about TEST_FRACTION of keys, "train" for the rest: a fixed hash (crc32), the same in
    every process and Python version (unlike hash()).

    >>> split_of("add 3 4"), split_of("add 1 2")
    ('train', 'train')
    """
    return "test" if zlib.crc32(key.encode("utf-8")) % 1000 < TEST_FRACTION * 1000 else "train"


def _all_tasks(kind: str) -> list[tuple[str, Task]]:
    """Every task of one family as (split key, task). Tasks that share a key share a split: a+b and
    b+a are one key, so the test set's sums are facts the model never saw, in either order."""
    out = []
    if kind == "add":
        for a in range(10):
            for b in range(10):
                out.append((f"add {min(a, b)} {max(a, b)}", Task(f"What is {a} plus {b}?", str(a + b), kind)))
    elif kind == "repeat":
        for w1 in WORDS:
            for w2 in WORDS:
                if w1 != w2:
                    out.append((f"repeat {w1} {w2}", Task(f"Repeat after me: {w1} {w2}", f"{w1} {w2}", kind)))
    elif kind == "bigger":
        for a in range(100):
            for b in range(100):
                if a != b:
                    out.append((f"bigger {a} {b}", Task(f"Which is bigger, {a} or {b}?", str(max(a, b)), kind)))
    else:
        raise ValueError(f"unknown task kind {kind!r}; choose from {TASK_KINDS}")
    return out


def make_tasks(n: int, seed: int = 0, split: str = "train", kinds=TASK_KINDS) -> list[Task]:
    """n generated tasks from `split` ("train" or "test"), the families taking turns, in a random order
    fixed by seed. Within a family no task repeats until the split's tasks of that family run out
    (the test split has 20 addition tasks, 246 repeat and 1,982 comparison tasks).

    >>> make_tasks(3, seed=0)
    [Task(prompt='Which is bigger, 33 or 6?', answer='33', kind='bigger'),
     Task(prompt='Repeat after me: water crown', answer='water crown', kind='repeat'),
     Task(prompt='What is 0 plus 0?', answer='0', kind='add')]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if isinstance(kinds, str) or not kinds:
        raise ValueError(f"kinds must be a non-empty sequence of task kinds from {TASK_KINDS}, got {kinds!r}")
    rng = random.Random(f"{seed}-{split}")
    pools = []
    for kind in kinds:
        pool = [task for key, task in _all_tasks(kind) if split_of(key) == split]
        rng.shuffle(pool)
        pools.append(pool)
    out = []
    for i in range(n):
        pool = pools[i % len(pools)]
        out.append(pool[(i // len(pools)) % len(pool)])
    rng.shuffle(out)
    return out


_NUMBER = re.compile(r"-?\d+")


def _normalise(text: str) -> str:
    return " ".join(text.split()).strip(" .!?,;:").casefold()


def is_correct(task: Task, response: str) -> bool:
    """Whether `response` answers `task`. The response is cut at the first <|end|> (if any); then

    - a numeric answer ("7") is right when the FIRST integer in the response equals it:
      "7", " 7.", "It is 7" are right; "3 plus 4 is 7" is wrong (its first number is 3), "seven" is wrong;
    - any other answer is right when the response equals it up to case, surrounding whitespace and
      trailing punctuation: "King queen." answers "king queen"; "king queen rose" does not.

    >>> is_correct(Task("What is 3 plus 4?", "7"), " 7<|end|>")
    True
    """
    if not isinstance(task, Task):
        raise TypeError(f"task must be a Task, got {type(task).__name__}")
    if not isinstance(response, str):
        raise TypeError(f"response must be a str, got {type(response).__name__}")
    response = response.split(END, 1)[0]
    if _NUMBER.fullmatch(task.answer.strip()):
        found = _NUMBER.search(response)
        return found is not None and int(found.group()) == int(task.answer)
    return _normalise(response) == _normalise(task.answer)


# --- replies --------------------------------------------------------------------------------------

@torch.no_grad()
def generate_replies(model, tok, prompts, max_new_tokens: int = 32, **sampling_kwargs) -> list[tuple[str, bool]]:
    """The assistant's reply to each prompt, as (text cut at <|end|>, whether <|end|> came).

    Prompts whose templates have the same token length run as one batch through
    llm_lib.sampling.generate. Greedy (temperature=0) unless sampling_kwargs say otherwise; pass a
    `generator` for reproducible draws. ended=False means the model ran out of max_new_tokens
    without closing its turn: it did not follow the template.
    """
    from llm_lib.sampling import generate

    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of str; for one prompt use chat()")
    sampling_kwargs.setdefault("temperature", 0)
    end_id = _special_id(tok, END)
    encoded = [tok.encode(format_chat(p)) for p in prompts]
    by_length = {}
    for i, ids in enumerate(encoded):
        by_length.setdefault(len(ids), []).append(i)
    out = [None] * len(prompts)
    for length, rows in sorted(by_length.items()):
        if length >= model.config.context_length:
            raise ValueError(f"a prompt takes {length} tokens, the model's whole context; shorten it")
        new = min(max_new_tokens, model.config.context_length - length)
        batch = torch.tensor([encoded[i] for i in rows], dtype=torch.long)  # (B, T)
        seq = generate(model, batch, new, eos_id=end_id, **sampling_kwargs)[:, length:]  # (B, new)
        for i, row in zip(rows, seq.tolist()):
            ended = end_id in row
            out[i] = (tok.decode(row[:row.index(end_id)] if ended else row), ended)
    return out


def chat(model, tok, prompt: str, max_new_tokens: int = 32, **sampling_kwargs) -> str:
    """The assistant's reply to one prompt: generate after format_chat(prompt), stop at <|end|>
    (not included). Greedy unless you pass temperature (and top_k, top_p, generator...).

    >>> chat(load("sft"), load("tokenizer"), "What is 3 plus 4?")   # a training fact
    '7'
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    return generate_replies(model, tok, [prompt], max_new_tokens, **sampling_kwargs)[0][0]


# --- the data -------------------------------------------------------------------------------------

def chatterbot_pairs(split: str = "train", max_chars: int = 400) -> list[tuple[str, str]]:
    """(prompt, response) pairs from the chatterbot-corpus dialogues: each utterance and the reply after
    it. A conversation's split comes from split_of(its first utterance), so one topic question never
    sits on both sides. Pairs longer than max_chars are dropped (the course model's context is short)."""
    from llm_lib.data import chatterbot_conversations

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    pairs = []
    for topic, conversations in chatterbot_conversations().items():
        for conv in conversations:
            if split_of(f"chat {conv[0].casefold()}") != split:
                continue
            for prompt, response in zip(conv, conv[1:]):
                if prompt and response and len(prompt) + len(response) <= max_chars and not any(
                        s in prompt + response for s in (USER, ASSISTANT, END, PAD)):
                    pairs.append((prompt, response))
    return pairs


def sft_examples(tok, pairs, context_length):
    """encode_example for each (prompt, response) pair."""
    return [encode_example(tok, p, r, context_length) for p, r in pairs]


def train_sft(model, examples, steps: int, batch_size: int = 16, lr: float = 1e-3, min_lr: float = 1e-4,
              warmup: int = 20, weight_decay: float = 0.0, grad_clip: float = 1.0, seed: int = 0,
              pad_id: int = 0, progress: bool = True, desc: str = "SFT"):
    """Fine-tune the parameters of `model` that require grad on (ids, labels) examples; returns the
    per-step history {"step", "loss", "lr"}.

    AdamW (llm_lib.optim), warmup then cosine decay, gradient-norm clipping; step s trains on a batch
    of examples drawn by a generator seeded with (seed, s), so the run is deterministic. The loss is
    response_loss (response tokens only).
    """
    from tqdm.auto import tqdm

    from llm_lib.optim import AdamW, clip_grad_norm_, cosine_lr

    if not examples:
        raise ValueError("train_sft needs at least one example")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no parameter of the model requires grad: nothing to train")
    decay = [p for p in params if p.dim() >= 2]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer = AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.95))
    history = {"step": [], "loss": [], "lr": []}
    model.train()
    for step in tqdm(range(steps), desc=desc, disable=not progress, mininterval=1.0):
        lr_now = cosine_lr(step, lr, min_lr, warmup, max(steps - 1, warmup + 1))
        for group in optimizer.param_groups:
            group["lr"] = lr_now
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        index = torch.randint(len(examples), (batch_size,), generator=g).tolist()
        x, y = collate([examples[i] for i in index], pad_id)  # (B, T), (B, T)
        loss = response_loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            clip_grad_norm_(params, grad_clip)
        optimizer.step()
        history["step"].append(step)
        history["loss"].append(loss.item())
        history["lr"].append(lr_now)
    model.eval()
    return history


def evaluate_replies(model, tok, tasks, chat_prompts=(), max_new_tokens: int = 16) -> dict:
    """Greedy replies to the tasks (and to extra chat prompts, which have no checkable answer):
    template rate = share of replies closed by <|end|>, accuracy = share is_correct (per kind too)."""
    prompts = [t.prompt for t in tasks] + list(chat_prompts)
    replies = generate_replies(model, tok, prompts, max_new_tokens)
    task_replies, chat_replies = replies[:len(tasks)], replies[len(tasks):]
    correct = [is_correct(t, text) for t, (text, _) in zip(tasks, task_replies)]
    result = {"template_rate": sum(e for _, e in replies) / max(len(replies), 1),
              "task_template_rate": sum(e for _, e in task_replies) / max(len(tasks), 1),
              "chat_template_rate": sum(e for _, e in chat_replies) / max(len(chat_replies), 1),
              "accuracy": sum(correct) / max(len(tasks), 1), "accuracy_by_kind": {}}
    for kind in sorted({t.kind for t in tasks}):
        ok = [c for t, c in zip(tasks, correct) if t.kind == kind]
        result["accuracy_by_kind"][kind] = sum(ok) / len(ok)
    result["replies"] = [text for text, _ in replies]
    return result


# --- the course SFT model (pipeline stage "sft") ---------------------------------------------------

def build_sft_model(out, recipe, tok, base_model):
    """Fine-tune a copy of the base model per `recipe` (pipeline.RECIPES["sft"]) into folder `out`.

    Writes model.safetensors, config.json, history.json, eval.json (base vs SFT replies to the test
    split); returns stats for the manifest, with the measured before/after figures.
    """
    import copy

    from llm_lib.train import save_stage_artifact

    out = Path(out)
    data, train_cfg, ev = recipe["data"], recipe["train"], recipe["eval"]
    ctx = data["context_length"]
    train_pairs = chatterbot_pairs("train", data["max_chars"])
    train_tasks = make_tasks(data["n_tasks"], seed=recipe["seed"], split="train")
    examples = (sft_examples(tok, train_pairs, ctx)
                + sft_examples(tok, [(t.prompt, t.answer) for t in train_tasks], ctx))
    test_tasks = make_tasks(ev["n_test_tasks"], seed=recipe["seed"], split="test")
    test_tasks = list(dict.fromkeys(test_tasks))  # distinct prompts only
    rng = random.Random(recipe["seed"])
    test_chats = sorted({p for p, _ in chatterbot_pairs("test", data["max_chars"])})
    test_chats = rng.sample(test_chats, min(ev["n_test_chats"], len(test_chats)))

    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        torch.manual_seed(recipe["seed"])
        before = evaluate_replies(base_model, tok, test_tasks, test_chats, ev["max_new_tokens"])
        model = copy.deepcopy(base_model)
        start = time.perf_counter()
        history = train_sft(model, examples, seed=recipe["seed"], pad_id=_special_id(tok, PAD), **train_cfg)
        train_seconds = time.perf_counter() - start
        after = evaluate_replies(model, tok, test_tasks, test_chats, ev["max_new_tokens"])
    finally:
        torch.set_num_threads(threads)

    save_stage_artifact(out, model, history, {
        "tasks": [asdict(t) for t in test_tasks], "chat_prompts": test_chats, "base": before, "sft": after})
    summary = {k: {m: round(v, 4) for m, v in r.items() if isinstance(v, float)}
               | {"accuracy_by_kind": {k2: round(v2, 4) for k2, v2 in r["accuracy_by_kind"].items()}}
               for k, r in (("base", before), ("sft", after))}
    return {"train_examples": len(examples), "chat_pairs": len(train_pairs), "train_tasks": len(train_tasks),
            "test_tasks": len(test_tasks), "test_chats": len(test_chats), "steps": train_cfg["steps"],
            "train_tokens": int(sum(sum(lab != IGNORE_INDEX for lab in labels) for _, labels in examples)),
            "final_loss": round(sum(history["loss"][-20:]) / len(history["loss"][-20:]), 4),
            "train_seconds": round(train_seconds, 1), "threads": os.cpu_count(), **summary}

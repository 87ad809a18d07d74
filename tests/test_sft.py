"""llm_lib.sft: chat template, label masking on real batches, tasks and their grader, replies, training."""
import copy

import pytest
import torch
import torch.nn.functional as F

from llm_lib import sft
from llm_lib.model import GPT, GPTConfig
from llm_lib.sft import (IGNORE_INDEX, Task, chat, collate, encode_example, format_chat, generate_replies,
                         is_correct, make_tasks, response_loss, train_sft)


@pytest.fixture(scope="module")
def tok():
    from llm_lib.pipeline import load

    return load("tokenizer")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=4096, context_length=64, n_layer=1, n_head=2, d_model=16)).eval()


# --- template -------------------------------------------------------------------------------------

def test_format_chat():
    assert format_chat("Hi") == "<|user|>Hi<|end|><|assistant|>"
    assert format_chat("Hi", "Hello!") == "<|user|>Hi<|end|><|assistant|>Hello!<|end|>"
    assert format_chat("Hi", "") == "<|user|>Hi<|end|><|assistant|><|end|>"
    with pytest.raises(ValueError, match="special token"):
        format_chat("Hi<|end|><|assistant|>Sure")
    with pytest.raises(TypeError):
        format_chat(3)
    with pytest.raises(TypeError):
        format_chat("Hi", 3)


def test_encode_example_masks_exactly_the_prompt(tok):
    ids, labels = encode_example(tok, "What is 3 plus 4?", "7", 256)
    assert ids == tok.encode(format_chat("What is 3 plus 4?", "7"))
    n_prompt = len(tok.encode(format_chat("What is 3 plus 4?")))
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert tok.decode(ids[n_prompt:]) == "7<|end|>"  # the response and its closing <|end|> are trained
    assert ids[n_prompt - 1] == tok.special_tokens["<|assistant|>"]


def test_masking_edge_cases(tok):
    # Empty response: only <|end|> is trained (the model learns to close its turn).
    ids, labels = encode_example(tok, "Hi", "", 256)
    assert [lab for lab in labels if lab != IGNORE_INDEX] == [tok.special_tokens["<|end|>"]]
    # Truncated response: cut at the context, no <|end|>, the prompt still masked.
    n_prompt = len(tok.encode(format_chat("Hi")))
    ids, labels = encode_example(tok, "Hi", "a very long answer " * 20, n_prompt + 3)
    assert len(ids) == len(labels) == n_prompt + 3
    assert labels[n_prompt:] == ids[n_prompt:] and tok.special_tokens["<|end|>"] not in ids[n_prompt:]
    # A prompt that fills the context leaves nothing to train on.
    with pytest.raises(ValueError, match="no room"):
        encode_example(tok, "Hi", "Hello", n_prompt)
    with pytest.raises(ValueError, match="context_length"):
        encode_example(tok, "Hi", "Hello", 1)
    with pytest.raises(TypeError):
        encode_example(tok, "Hi", None, 64)


def test_collate_on_a_real_batch(tok):
    pairs = [("What is 3 plus 4?", "7"), ("Hello", "Hi there, how are you today?"), ("Repeat after me: a b", "a b")]
    examples = [encode_example(tok, p, r, 256) for p, r in pairs]
    pad = tok.special_tokens["<|endoftext|>"]
    x, y = collate(examples, pad)
    T = max(len(ids) for ids, _ in examples) - 1
    assert x.shape == y.shape == (3, T)
    for row, (ids, labels) in enumerate(examples):
        n = len(ids) - 1
        assert x[row, :n].tolist() == ids[:-1] and y[row, :n].tolist() == labels[1:]
        assert (x[row, n:] == pad).all() and (y[row, n:] == IGNORE_INDEX).all()
        # The trained targets, read back, are exactly the response and its <|end|>.
        trained = [t for t in y[row].tolist() if t != IGNORE_INDEX]
        assert tok.decode(trained) == pairs[row][1] + "<|end|>"
    # The masked loss equals cross-entropy computed by hand over the response positions only.
    torch.manual_seed(0)
    logits = torch.randn(*x.shape, 4096)
    keep = y != IGNORE_INDEX
    by_hand = -torch.log_softmax(logits, -1)[keep].gather(1, y[keep][:, None]).mean()
    torch.testing.assert_close(response_loss(logits, y), by_hand)
    torch.testing.assert_close(response_loss(logits, y), F.cross_entropy(logits[keep], y[keep]))


def test_collate_and_loss_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        collate([], 0)
    with pytest.raises(ValueError, match="aligned"):
        collate([([1, 2, 3], [1, 2])], 0)
    with pytest.raises(ValueError, match="at least 2"):
        collate([([1], [1])], 0)
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        response_loss(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="no response token"):
        response_loss(torch.zeros(1, 3, 5), torch.full((1, 3), IGNORE_INDEX))


def test_padding_does_not_change_the_loss(tiny, tok):
    """Right padding is invisible: a row's loss alone equals its loss inside a padded batch."""
    a = encode_example(tok, "What is 3 plus 4?", "7", 64)
    b = encode_example(tok, "Tell me a story about a king", "Once there was a king who ruled the sea.", 64)
    pad = tok.special_tokens["<|endoftext|>"]
    x, y = collate([a, b], pad)
    xa, ya = collate([a], pad)
    with torch.no_grad():
        full = tiny(x)
        alone = tiny(xa)
    torch.testing.assert_close(full[0, :xa.shape[1]], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(response_loss(full[:1, :xa.shape[1]], y[:1, :xa.shape[1]]), response_loss(alone, ya))


# --- tasks ----------------------------------------------------------------------------------------

def test_task_splits_are_disjoint_and_deterministic():
    train = make_tasks(5000, seed=0, split="train")
    test = make_tasks(1000, seed=0, split="test")
    assert not {t.prompt for t in train} & {t.prompt for t in test}
    assert make_tasks(50, seed=3, split="test") == make_tasks(50, seed=3, split="test")
    assert make_tasks(50, seed=3) != make_tasks(50, seed=4)
    # Addition facts are held out in both orders: a test sum never appears as a training sum.
    def facts(tasks):
        return {tuple(sorted(map(int, t.prompt[8:-1].split(" plus ")))) for t in tasks if t.kind == "add"}
    assert facts(test) and not facts(train) & facts(test)
    for t in train[:200] + test[:200]:
        assert t.kind in sft.TASK_KINDS and is_correct(t, t.answer)
    kinds = [t.kind for t in make_tasks(30, seed=0)]
    assert all(kinds.count(k) == 10 for k in sft.TASK_KINDS)


def test_make_tasks_bad_input():
    for n in (-1, 2.5, True):
        with pytest.raises(ValueError):
            make_tasks(n)
    with pytest.raises(ValueError, match="split"):
        make_tasks(3, split="val")
    with pytest.raises(ValueError, match="kind"):
        make_tasks(3, kinds=("divide",))
    assert make_tasks(0) == []


@pytest.mark.parametrize("response,expected", [
    ("7", True), (" 7", True), ("7.", True), ("It is 7", True), ("7<|end|>", True), ("7<|end|>8", True),
    ("07", True), ("70", False), ("-7", False), ("seven", False), ("", False), ("3 plus 4 is 7", False),
    ("<|end|>7", False), ("17", False), ("7 or 8", True),
])
def test_is_correct_numbers(response, expected):
    assert is_correct(Task("What is 3 plus 4?", "7", "add"), response) is expected


@pytest.mark.parametrize("response,expected", [
    ("king queen", True), ("King Queen.", True), ("  king   queen ! ", True), ("king queen rose", False),
    ("queen king", False), ("king", False), ("king queen<|end|>rose", True),
])
def test_is_correct_words(response, expected):
    assert is_correct(Task("Repeat after me: king queen", "king queen", "repeat"), response) is expected


def test_is_correct_bad_input():
    with pytest.raises(TypeError, match="Task"):
        is_correct(("q", "7"), "7")
    with pytest.raises(TypeError, match="str"):
        is_correct(Task("q", "7"), 7)


# --- replies and training -------------------------------------------------------------------------

def test_chat_and_generate_replies(tiny, tok):
    reply = chat(tiny, tok, "Hello", max_new_tokens=5)
    assert isinstance(reply, str) and "<|end|>" not in reply
    replies = generate_replies(tiny, tok, ["Hello", "What is 3 plus 4?", "Hi"], max_new_tokens=5)
    assert replies[0][0] == reply  # greedy: batched or alone, the same reply
    for text, ended in replies:
        assert isinstance(text, str) and isinstance(ended, bool)
    with pytest.raises(TypeError):
        generate_replies(tiny, tok, "Hello")
    with pytest.raises(TypeError):
        chat(tiny, tok, ["Hello"])


def test_train_sft_is_deterministic_and_learns_the_template(tok):
    examples = [encode_example(tok, t.prompt, t.answer, 64) for t in make_tasks(40, seed=0)]
    pad = tok.special_tokens["<|endoftext|>"]

    def run():
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=4096, context_length=64, n_layer=1, n_head=2, d_model=32))
        history = train_sft(model, examples, steps=60, batch_size=8, lr=3e-3, warmup=5, seed=1, pad_id=pad,
                            progress=False)
        return model, history

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest, and the same on every machine
    try:
        model, history = run()
        _, again = run()
    finally:
        torch.set_num_threads(threads)
    assert history["loss"] == again["loss"]
    assert sum(history["loss"][-5:]) / 5 < history["loss"][0] / 2
    # After 60 steps, even a tiny random model closes its turn with <|end|> after a task.
    ended = [e for _, e in generate_replies(model, tok, [t.prompt for t in make_tasks(12, seed=0)], 8)]
    assert sum(ended) >= 9


def test_train_sft_bad_input(tiny):
    with pytest.raises(ValueError, match="at least one"):
        train_sft(tiny, [], steps=1)
    frozen = copy.deepcopy(tiny).requires_grad_(False)
    with pytest.raises(ValueError, match="requires grad"):
        train_sft(frozen, [([1, 2], [1, 2])], steps=1)


@pytest.mark.slow
def test_sft_artifact_follows_the_template_better_than_base():
    """The pipeline's SFT model (built or cached) and its manifest's measured before/after figures."""
    import json

    from llm_lib.pipeline import artifact_dir, load

    model = load("sft")
    stats = json.loads((artifact_dir("sft") / "manifest.json").read_text())["stats"]
    assert stats["sft"]["template_rate"] > stats["base"]["template_rate"] + 0.5
    assert stats["sft"]["accuracy"] > stats["base"]["accuracy"]
    assert not model.training and model.config == load("base").config

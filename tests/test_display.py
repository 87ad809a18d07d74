"""Presentation helpers the book uses: source blocks, coloured tokens, the tokenizer playground."""
import html as html_lib
import inspect

import pytest

from llm_lib import display, tokenizer
from llm_lib.data import gpt2_encoding


def test_source_markdown_is_the_library_source():
    block = display.source_markdown(tokenizer.merge)
    assert inspect.getsource(tokenizer.merge).strip() in block
    assert block.splitlines()[0].startswith("`llm_lib.tokenizer.merge`, from `llm_lib/tokenizer.py`")
    with pytest.raises(TypeError, match="needs a Python function"):
        display.source_markdown(len)


@pytest.mark.parametrize("text", ["Hello world", "naïve 🦊 café\n\tend", ""])
def test_token_pieces_rebuild_the_text_for_tiktoken_and_bpe(text):
    gpt2 = gpt2_encoding()
    tok = tokenizer.BPETokenizer.train("hello world, hello café 🦊 " * 20, 300, special_tokens=["<|endoftext|>"])
    for enc in (gpt2, tok):
        pieces = display.token_pieces(enc, text)
        assert b"".join(piece for _, piece in pieces).decode("utf-8") == text
        assert [i for i, _ in pieces] == (enc.encode(text, allowed_special="all") if enc is gpt2 else enc.encode(text))


def test_tokens_html_shows_every_token_and_partial_bytes():
    gpt2 = gpt2_encoding()
    out = display.tokens_html(gpt2, "Hi 🦊")
    n = len(gpt2.encode("Hi 🦊"))
    assert f"{n} tokens" in out
    assert "part of a multi-byte UTF-8 character" in out  # the fox emoji spans several GPT-2 tokens
    with pytest.raises(TypeError, match="expected a tiktoken Encoding or an llm_lib BPETokenizer"):
        display.tokens_html(object(), "x")


def test_playground_static_snapshot_and_live_update():
    gpt2 = gpt2_encoding()
    app = display.tokenizer_playground({"GPT-2": gpt2}, text="strawberry")
    snapshot = app.static_html()
    assert "strawberry" in html_lib.unescape(snapshot) and "Static snapshot" in snapshot
    app.textarea.value = "NASA"
    assert str(gpt2.encode("NASA")[0]) in app.panels["GPT-2"].value
    with pytest.raises(TypeError):
        display.tokenizer_playground({})

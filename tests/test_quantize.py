"""llm_lib.quantize against the real references: the gguf package (llama.cpp's Python library) for
Q8_0 / Q4_0 bytes and every dequantization, ggml's C quantizer (recorded blocks) for Q4_K, and
gguf.GGUFReader for exported files."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType, quants  # noqa: E402

from llm_lib import quantize as Q  # noqa: E402
from llm_lib.model import GPT, GPTConfig  # noqa: E402

DATA = Path(__file__).parent / "data"
SHAPES = [(32,), (64,), (1, 32), (3, 96), (7, 160), (2, 3, 64), (16, 512), (33, 256), (5, 1024)]


def _weights(rng, shape, kind):
    x = rng.standard_normal(shape).astype(np.float32)
    if kind == "tiny":
        return x * np.float32(1e-6)
    if kind == "huge":
        return x * np.float32(1e4)
    if kind == "outliers":  # a few weights 50x larger than the rest, as in real LLM matrices
        return np.where(rng.random(shape) < 0.01, x * 50, x).astype(np.float32)
    if kind == "zeros":
        return np.zeros(shape, np.float32)
    if kind == "some_zero_blocks":
        x[..., :32] = 0
        return x
    if kind == "positive":
        return np.abs(x)
    if kind == "ties":  # values on exact half steps, where rounding modes disagree
        return (np.round(x * 4) / 4).astype(np.float32)
    if kind == "constant":
        return np.full(shape, -0.37, np.float32)
    return x


KINDS = ["normal", "tiny", "huge", "outliers", "zeros", "some_zero_blocks", "positive", "ties", "constant"]


@pytest.fixture(scope="module")
def tiny_gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=300, context_length=32, n_layer=2, n_head=4, d_model=64)).eval()


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_blocks_are_byte_identical_to_gguf(qtype, kind, shape):
    rng = np.random.default_rng(hash((qtype, kind, shape)) % 2**32)
    x = _weights(rng, shape, kind)
    ours = Q.quantize(x, qtype)
    theirs = quants.quantize(x, GGMLQuantizationType[qtype])
    assert ours.dtype == theirs.dtype == np.uint8 and ours.shape == theirs.shape
    assert ours.tobytes() == theirs.tobytes()
    # and both dequantizers read those bytes to the same floats
    np.testing.assert_array_equal(Q.dequantize(ours, qtype), quants.dequantize(theirs, GGMLQuantizationType[qtype]))


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_K"])
def test_real_weights_of_a_model_match_gguf(qtype, tiny_gpt):
    for name, w in tiny_gpt.state_dict().items():
        if w.dim() != 2 or w.shape[-1] % Q.BLOCK_SIZE[qtype]:
            continue
        ours = Q.quantize(w, qtype)  # a torch tensor is accepted directly
        deq = quants.dequantize(ours, GGMLQuantizationType[qtype])
        np.testing.assert_array_equal(Q.dequantize(ours, qtype), deq, err_msg=name)
        if qtype != "Q4_K":  # gguf has no Q4_K quantizer
            assert ours.tobytes() == quants.quantize(w.numpy(), GGMLQuantizationType[qtype]).tobytes(), name


def test_course_base_weights_match_gguf_when_cached():
    from llm_lib import pipeline

    if not pipeline.is_current("base"):
        pytest.skip("the course base model is not built in this cache")
    model = pipeline.load("base")
    for w in (model.tok_emb.weight, model.blocks[0].attn.qkv.weight, model.blocks[-1].mlp.proj.weight):
        w = w.detach().numpy()
        for qtype in ("Q8_0", "Q4_0"):
            assert Q.quantize(w, qtype).tobytes() == quants.quantize(w, GGMLQuantizationType[qtype]).tobytes()


def test_q4_k_bytes_match_ggml_c_reference():
    """Blocks recorded from ggml's quantize_row_q4_K_ref (ggml-quants.c, llama.cpp as vendored in
    llama-cpp-python 0.3.36): normal, outlier, all-zero, all-positive, tiny negative, constant rows."""
    ref = np.load(DATA / "ggml_q4_k_reference.npz")
    ours = Q.quantize_q4_k(ref["x"])
    assert ours.shape == ref["blocks"].shape
    mismatched = np.flatnonzero((ours != ref["blocks"]).any(axis=1))
    assert mismatched.size == 0, f"super-blocks {mismatched.tolist()} differ from ggml's"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(256,), (4, 256), (3, 512), (2, 2, 768)])
def test_q4_k_dequantizes_identically_in_gguf(kind, shape):
    rng = np.random.default_rng(hash((kind, shape)) % 2**32)
    x = _weights(rng, shape, kind)
    blocks = Q.quantize_q4_k(x)
    assert blocks.shape == (*shape[:-1], shape[-1] // 256 * 144)
    ours = Q.dequantize_q4_k(blocks)
    np.testing.assert_array_equal(ours, quants.dequantize(blocks, GGMLQuantizationType.Q4_K))
    assert ours.shape == x.shape
    if kind == "tiny":
        return  # scales below fp16's smallest normal number (6e-5) lose precision: no tight bound
    # 16 levels per sub-block, with 6-bit scales: the error is a small fraction of the weights' spread
    rms = lambda a: float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))  # noqa: E731
    assert rms(ours - x) <= 0.15 * rms(x) + 1e-7


def test_q4_k_beats_q4_0_on_lopsided_weights():
    # asymmetric data: Q4_0's symmetric grid wastes half its codes, Q4_K's offset does not
    x = np.abs(np.random.default_rng(0).standard_normal((64, 256))).astype(np.float32)
    err = {q: np.abs(Q.dequantize(Q.quantize(x, q), q) - x).mean() for q in ("Q4_0", "Q4_K")}
    assert err["Q4_K"] < err["Q4_0"]


def test_round_trip_error_shrinks_with_bits():
    x = np.random.default_rng(1).standard_normal((32, 256)).astype(np.float32)
    err = {q: np.abs(Q.dequantize(Q.quantize(x, q), q) - x).max() for q in ("Q8_0", "Q4_0")}
    assert err["Q8_0"] < err["Q4_0"] / 8
    # Q8_0 is exact to half a step of max|block| / 127 (plus the fp16 rounding of the scale)
    blocks = x.reshape(-1, 32)
    step = np.abs(blocks).max(1, keepdims=True) / 127
    assert (np.abs(Q.dequantize_q8_0(Q.quantize_q8_0(x)).reshape(-1, 32) - blocks) <= 0.51 * step + 1e-3 * step * 127).all()


def test_byte_layouts():
    x = np.linspace(-1, 1, 32, dtype=np.float32)
    q8 = Q.quantize_q8_0(x)
    assert q8.shape == (34,) and q8[:2].view(np.float16)[0] == np.float16(1 / 127)
    assert q8[2:].view(np.int8).tolist() == np.round(np.linspace(-127, 127, 32)).astype(int).tolist()
    q4 = Q.quantize_q4_0(x)
    d = q4[:2].view(np.float16)[0]
    assert q4.shape == (18,) and d == np.float16(0.125)  # the block's extreme is -1: d = -1 / -8, so -1 is code 0
    codes = Q.unpack_nibbles(q4[2:][None])[0]
    assert codes[0] == 0 and (codes[:16] == (q4[2:] & 0x0F)).all() and (codes[16:] == (q4[2:] >> 4)).all()
    assert Q.bits_per_weight("Q8_0") == 8.5 and Q.bits_per_weight("Q4_0") == 4.5 and Q.bits_per_weight("Q4_K") == 4.5


def test_pack_unpack_nibbles_round_trip():
    codes = np.random.default_rng(2).integers(0, 16, (10, 32), dtype=np.uint8)
    assert np.array_equal(Q.unpack_nibbles(Q.pack_nibbles(codes)), codes)


def test_dequantize_accepts_bytes():
    x = np.random.default_rng(3).standard_normal(64).astype(np.float32)
    for qtype in ("Q8_0", "Q4_0"):
        blocks = Q.quantize(x, qtype)
        np.testing.assert_array_equal(Q.dequantize(blocks.tobytes(), qtype), Q.dequantize(blocks, qtype))


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_K"])
def test_bad_inputs_get_clear_errors(qtype):
    n = Q.BLOCK_SIZE[qtype]
    with pytest.raises(ValueError, match="not a multiple of the block size"):
        Q.quantize(np.ones((2, n + 3), np.float32), qtype)
    with pytest.raises(ValueError, match="inf or nan"):
        Q.quantize(np.full(n, np.nan, np.float32), qtype)
    with pytest.raises(ValueError, match="non-empty"):
        Q.quantize(np.array(1.0, np.float32), qtype)
    with pytest.raises(TypeError, match="floating-point"):
        Q.quantize(np.ones(n, np.int32), qtype)
    with pytest.raises(TypeError):
        Q.quantize([1.0] * n, qtype)
    with pytest.raises(ValueError, match="whole blocks"):
        Q.dequantize(np.zeros(Q.BLOCK_BYTES[qtype] + 1, np.uint8), qtype)
    with pytest.raises(TypeError):
        Q.dequantize(np.zeros(Q.BLOCK_BYTES[qtype], np.float32), qtype)
    with pytest.raises(ValueError, match="qtype"):
        Q.quantize(np.ones(32, np.float32), "Q3_X")


def test_padding_makes_any_length_quantizable():
    x = torch.randn(3, 50)
    padded = Q.pad_to_multiple(x, 32)
    assert padded.shape == (3, 64) and torch.equal(padded[:, :50], x) and (padded[:, 50:] == 0).all()
    back = Q.dequantize_q8_0(Q.quantize_q8_0(padded))[:, :50]
    assert np.abs(back - x.numpy()).max() < 0.02


# --- the ideas: absmax / zero-point, granularity, rounding -------------------------------------------

def test_absmax_and_zeropoint_grids():
    x = torch.tensor([[0.5, -1.0, 0.25, 0.0]])
    q = Q.quantize_tensor(x, bits=8)
    assert q.q.tolist() == [[64.0, -127.0, 32.0, 0.0]] and q.scale.item() == pytest.approx(1 / 127)
    assert torch.allclose(q.dequantize(), x, atol=0.5 / 127)
    z = Q.quantize_tensor(torch.tensor([0.0, 1.0, 3.0]), bits=2, scheme="zeropoint")
    assert z.q.tolist() == [[0.0, 1.0, 3.0]] and z.zero.item() == 0
    z = Q.quantize_tensor(torch.tensor([-1.0, 2.0]), bits=8, scheme="zeropoint")
    assert z.q.min() == 0 and z.q.max() == 255
    assert torch.allclose(z.dequantize(), torch.tensor([-1.0, 2.0]), atol=3 / 255)


def test_granularity_shapes_and_error_order():
    torch.manual_seed(0)
    w = torch.randn(64, 256) * torch.linspace(0.1, 5, 64)[:, None]  # rows of very different scales
    w[3, 7] = 40.0  # one outlier
    err = {}
    for g in ("tensor", "channel", "block"):
        q = Q.quantize_tensor(w, bits=4, granularity=g, block_size=32)
        n_groups = {"tensor": 1, "channel": 64, "block": 64 * 8}[g]
        assert q.scale.shape == (n_groups, 1) and q.dequantize().shape == w.shape
        err[g] = (q.dequantize() - w).pow(2).mean().item()
    assert err["block"] < err["channel"] < err["tensor"]


def test_rounding_modes():
    x = torch.tensor([0.5, 1.5, -2.5, 2.4])
    assert Q.round_values(x, "nearest").tolist() == [0.0, 2.0, -2.0, 2.0]
    assert Q.round_values(x, "away").tolist() == [1.0, 2.0, -3.0, 2.0]
    assert Q.round_values(x, "floor").tolist() == [0.0, 1.0, -3.0, 2.0]
    g = torch.Generator().manual_seed(0)
    s = Q.round_values(torch.full((20000,), 0.3), "stochastic", generator=g)
    assert set(s.unique().tolist()) == {0.0, 1.0} and abs(s.mean().item() - 0.3) < 0.02  # unbiased
    with pytest.raises(ValueError, match="rounding"):
        Q.round_values(x, "banker")


def test_quantize_tensor_bad_inputs():
    with pytest.raises(TypeError):
        Q.quantize_tensor(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="bits"):
        Q.quantize_tensor(torch.randn(4), bits=1)
    with pytest.raises(ValueError, match="granularity"):
        Q.quantize_tensor(torch.randn(4), granularity="row")
    with pytest.raises(ValueError, match="multiple of block_size"):
        Q.quantize_tensor(torch.randn(2, 30), granularity="block", block_size=32)
    with pytest.raises(ValueError, match="scheme"):
        Q.quantize_tensor(torch.randn(4), scheme="minmax")
    with pytest.raises(ValueError, match="inf or nan"):
        Q.quantize_tensor(torch.tensor([1.0, float("inf")]))
    assert torch.equal(Q.quantize_tensor(torch.zeros(8)).dequantize(), torch.zeros(8))


# --- QuantizedLinear, quantized models ------------------------------------------------------------

@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_K"])
def test_quantized_linear_equals_matmul_with_dequantized_weight(qtype):
    torch.manual_seed(1)
    linear = nn.Linear(512, 48)
    layer = Q.QuantizedLinear.from_linear(linear, qtype)
    assert layer.blocks.dtype == torch.uint8 and layer.blocks.shape == (48, 512 // Q.BLOCK_SIZE[qtype] * Q.BLOCK_BYTES[qtype])
    w = torch.from_numpy(quants.dequantize(layer.blocks.numpy(), GGMLQuantizationType[qtype]))  # gguf's reading
    x = torch.randn(3, 5, 512)
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, w, linear.bias), rtol=0, atol=0)
    torch.testing.assert_close(layer(x), x @ w.T + linear.bias, rtol=1e-5, atol=1e-6)
    assert (layer(x) - linear(x)).abs().max() < 0.2
    assert layer.nbytes() < linear.weight.numel() * 4 / 3


def test_quantized_linear_bad_input():
    with pytest.raises(TypeError):
        Q.QuantizedLinear.from_linear(nn.Conv1d(4, 4, 1), "Q8_0")
    with pytest.raises(ValueError, match="block size"):
        Q.QuantizedLinear.from_linear(nn.Linear(40, 4), "Q8_0")


def test_tensor_qtype_fallbacks():
    assert Q.tensor_qtype((64, 192), "Q4_K") == "Q4_0"
    assert Q.tensor_qtype((64, 768), "Q4_K") == "Q4_K"
    assert Q.tensor_qtype((64, 40), "Q8_0") == "F32"
    assert Q.tensor_qtype((64,), "Q4_0") == "F32"


@pytest.mark.parametrize("qtype", ["F32", "Q8_0", "Q4_0", "Q4_K"])
def test_quantize_model_runs_and_stays_close(qtype, tiny_gpt):
    qm = Q.quantize_model(tiny_gpt, qtype)
    idx = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, out = tiny_gpt(idx), qm(idx)
    tol = {"F32": 0, "Q8_0": 0.05, "Q4_0": 0.5, "Q4_K": 0.5}[qtype]
    assert (ref - out).abs().max().item() <= tol
    assert sum(isinstance(m, Q.QuantizedLinear) for m in qm.modules()) == (0 if qtype == "F32" else 2 * 4 + 1)
    assert not any(isinstance(m, Q.QuantizedLinear) for m in tiny_gpt.modules())  # the original is untouched


def test_fake_quantize_model(tiny_gpt):
    fq = Q.fake_quantize_model(tiny_gpt, bits=4, granularity="block", block_size=32)
    w, v = tiny_gpt.blocks[0].mlp.fc.weight, fq.blocks[0].mlp.fc.weight
    assert not torch.equal(w, v) and torch.equal(v, Q.fake_quantize(w, bits=4, granularity="block", block_size=32))
    assert torch.equal(fq.pos_emb.weight, tiny_gpt.pos_emb.weight)


# --- GGUF export -----------------------------------------------------------------------------------

@pytest.mark.parametrize("qtype", ["F32", "Q8_0", "Q4_0", "Q4_K"])
def test_export_gguf_reads_back_to_the_same_tensors(qtype, tiny_gpt, tmp_path):
    path = Q.export_gguf(tiny_gpt, tmp_path / "m.gguf", qtype)
    meta, tensors = Q.read_gguf(path)
    c = tiny_gpt.config
    assert meta["general.architecture"] == "gpt2" and meta["gpt2.block_count"] == c.n_layer
    assert meta["gpt2.embedding_length"] == c.d_model and meta["gpt2.attention.head_count"] == c.n_head
    assert meta["gpt2.context_length"] == c.context_length and meta["gpt2.feed_forward_length"] == c.hidden_dim
    assert meta["tokenizer.ggml.model"] == "none" and meta["gpt2.vocab_size"] == c.vocab_size
    names = Q.gguf_tensor_names(c.n_layer)
    assert set(tensors) == set(names.values())
    state = tiny_gpt.state_dict()
    for ours, theirs in names.items():
        w = state[ours].numpy()
        values, stored = tensors[theirs]
        expected_type = "F32" if ours == "pos_emb.weight" else Q.tensor_qtype(w.shape, qtype)
        assert stored == expected_type, theirs
        expected = w if stored == "F32" else Q.dequantize(Q.quantize(w, stored), stored)
        np.testing.assert_array_equal(values, expected, err_msg=theirs)
    # the raw block bytes in the file are the ones gguf's reader hands back
    reader = gguf.GGUFReader(path)
    qkv = next(t for t in reader.tensors if t.name == "blk.0.attn_qkv.weight")
    if qtype in ("Q8_0", "Q4_0"):
        assert np.asarray(qkv.data).tobytes() == quants.quantize(state["blocks.0.attn.qkv.weight"].numpy(),
                                                                 GGMLQuantizationType[qtype]).tobytes()
    assert path.stat().st_size >= Q.gguf_nbytes(tiny_gpt, qtype)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed away


def test_export_gguf_with_tokenizer(tmp_path):
    from llm_lib.tokenizer import BPETokenizer

    text = "to be or not to be, that is the question " * 20
    tok = BPETokenizer.train(text, 256 + 20 + 1, special_tokens=["<|endoftext|>"])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tok.vocab), context_length=16, n_layer=1, n_head=2, d_model=32))
    meta, _ = Q.read_gguf(Q.export_gguf(model, tmp_path / "t.gguf", "Q8_0", tokenizer=tok))
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    tokens, merges = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.merges"]
    assert len(tokens) == len(tok.vocab) and len(merges) == len(tok.merges)
    assert tokens[tok.special_tokens["<|endoftext|>"]] == "<|endoftext|>"
    assert tokens[tok.encode(" ")[0]] == "Ġ" and tokens[tok.encode("t")[0]] == "t"  # GPT-2's byte-level alphabet
    first = merges[0].split(" ")
    assert len(first) == 2 and first[0] + first[1] in tokens
    assert meta["tokenizer.ggml.eos_token_id"] == tok.special_tokens["<|endoftext|>"]


def test_export_gguf_bad_inputs(tiny_gpt, tmp_path):
    with pytest.raises(ValueError, match="qtype"):
        Q.export_gguf(tiny_gpt, tmp_path / "x.gguf", "Q2_K")
    llama = GPT(GPTConfig(vocab_size=64, context_length=8, n_layer=1, n_head=2, d_model=32, norm="rmsnorm",
                          pos="rope", mlp="swiglu", bias=False, tie_weights=False))
    with pytest.raises(ValueError, match="gpt2 architecture"):
        Q.export_gguf(llama, tmp_path / "y.gguf", "Q8_0")
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


# --- the chapter's explorer -------------------------------------------------------------------------

def test_quantization_stats_and_static_snapshot():
    from llm_lib import quantize_viz as viz

    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))
    s8, s4 = viz.quantization_stats(w, 8, 32), viz.quantization_stats(w, 4, 32)
    assert s8["bits_per_weight"] == 8.5 and s4["bits_per_weight"] == 4.5
    assert s8["snr_db"] > s4["snr_db"] + 20  # each extra bit buys about 6 dB
    assert viz.quantization_stats(w, 4, "tensor")["bits_per_weight"] == pytest.approx(4 + 16 / w.numel())
    explorer = viz.quantization_explorer(w, bits=4, block="blocks of 16")
    html = explorer.static_html()
    assert "data:image/png;base64," in html and "4.500" not in html and "5.000 bits per weight" in html
    explorer.bits.value = 8  # the live widget redraws without error
    assert "8-bit" in explorer.readout.value
    with pytest.raises(ValueError):
        viz.quantization_explorer(w, block="blocks of 7")
    with pytest.raises(TypeError):
        viz.quantization_explorer(torch.randn(5))


# --- llama.cpp itself runs what export_gguf writes ---------------------------------------------

LLAMA_SIMPLE = os.environ.get("LLAMA_SIMPLE") or shutil.which("llama-simple")


@pytest.mark.skipif(not LLAMA_SIMPLE, reason="llama.cpp's llama-simple is not installed (chapter 14, section 7, "
                                             "says how to build it; then set LLAMA_SIMPLE=/path/to/llama-simple)")
@pytest.mark.parametrize("qtype", ["F32", "Q8_0", "Q4_0", "Q4_K"])
def test_llama_cpp_generates_what_our_quantized_model_generates(qtype, tmp_path):
    """llama.cpp loads the exported course model with its tokenizer and, decoding greedily, writes the
    same continuation as our own copy of the model in the same format (quantize_model)."""
    import subprocess

    from llm_lib import pipeline
    from llm_lib.sampling import generate

    model, tok = pipeline.load("base"), pipeline.load("tokenizer")
    path = Q.export_gguf(model, tmp_path / f"course-{qtype}.gguf", qtype, tokenizer=tok)
    prompt, n = "<|endoftext|>I will ", 20  # greedy decoding of this tiny model soon repeats line breaks
    run = subprocess.run([LLAMA_SIMPLE, "-m", str(path), "-n", str(n), prompt], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    ours_model = model if qtype == "F32" else Q.quantize_model(model, qtype)
    ids = tok.encode(prompt)
    ours = tok.decode(generate(ours_model, ids, n, temperature=0)[len(ids):])
    assert run.stdout.startswith(prompt) and run.stdout.endswith("\n"), run.stdout  # prompt, new text, "\n"
    theirs = run.stdout[len(prompt):-1]
    # llama.cpp also rounds activations to 8 bits in its quantized matmuls: allow the tail to drift
    agree = len(ours) if qtype == "F32" else len(ours) // 2
    assert theirs[:agree] == ours[:agree], (theirs, ours)

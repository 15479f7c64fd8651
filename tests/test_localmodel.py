"""The models the project generates: deterministic, loadable by real llama.cpp, well-behaved."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import gguf
import pytest
from llama_cpp import Llama

from hybridgate.localmodel import prepare_default_models, write_embedding_model, write_tiny_model
from hybridgate.localmodel.embedding import cosine, minilm_source
from hybridgate.localmodel.large import TINYLLAMA_SHAPE, write_large_model
from hybridgate.localmodel.tiny import LlamaShape, build_vocabulary


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def field_value(reader: gguf.GGUFReader, key: str) -> object:
    return reader.fields[key].contents()


# --------------------------------------------------------------------------- tiny


def test_tiny_model_is_deterministic_per_seed(tmp_path: Path) -> None:
    first = write_tiny_model(tmp_path / "a.gguf", seed=0)
    second = write_tiny_model(tmp_path / "b.gguf", seed=0)
    other = write_tiny_model(tmp_path / "c.gguf", seed=1)

    assert sha256(first) == sha256(second)
    assert sha256(first) != sha256(other)
    assert 500_000 < first.stat().st_size < 2_000_000


def test_tiny_vocabulary_keeps_byte_tokens_and_special_tokens(models_dir: Path) -> None:
    reader = gguf.GGUFReader(models_dir / "tiny.gguf")
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    types = field_value(reader, "tokenizer.ggml.token_type")
    assert isinstance(tokens, list)
    assert isinstance(types, list)

    byte_tokens = [t for t, kind in zip(tokens, types, strict=True) if kind == gguf.TokenType.BYTE]
    assert byte_tokens == [f"<0x{b:02X}>" for b in range(256)]
    assert field_value(reader, "tokenizer.ggml.model") == "llama"
    eos = field_value(reader, "tokenizer.ggml.eos_token_id")
    assert isinstance(eos, int)
    assert tokens[eos] == "</s>"
    assert "<|im_start|>" in str(field_value(reader, "tokenizer.chat_template"))
    assert "\u2581the" in tokens


def test_vocabulary_pads_to_a_requested_size() -> None:
    assert len(build_vocabulary(5000)) == 5000


def test_tiny_model_generates_readable_text_to_max_tokens(models_dir: Path) -> None:
    llm = Llama(model_path=str(models_dir / "tiny.gguf"), n_ctx=512, verbose=False)
    answer = llm.create_chat_completion(
        messages=[{"role": "user", "content": "Hello"}], max_tokens=24, temperature=1.0, seed=3
    )
    assert isinstance(answer, dict)
    text = answer["choices"][0]["message"]["content"] or ""

    assert answer["usage"]["completion_tokens"] == 24
    assert answer["choices"][0]["finish_reason"] == "length"
    assert re.fullmatch(r"[A-Za-z0-9 .,!?;:'\"()\-]+", text), text  # words, never raw bytes
    assert llm.chat_format == "chat_template.default"  # the GGUF's own template is used


# --------------------------------------------------------------------------- large


def test_large_model_has_tinyllamas_shape() -> None:
    s = TINYLLAMA_SHAPE
    kv = s.n_head_kv * s.head_dim
    per_layer = 2 * s.n_embd * s.n_embd + 2 * s.n_embd * kv + 3 * s.n_embd * s.n_ff
    parameters = s.n_layer * per_layer + 2 * (s.n_vocab or 0) * s.n_embd
    assert math.isclose(parameters, 1.1e9, rel_tol=0.02)


def test_large_model_quantizes_to_q4_k_m(tmp_path: Path) -> None:
    small = LlamaShape(n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=512, n_vocab=2048, n_ctx_train=512)

    path = write_large_model(tmp_path / "large.gguf", seed=0, shape=small)

    reader = gguf.GGUFReader(path)
    kinds = {t.tensor_type for t in reader.tensors}
    assert gguf.GGMLQuantizationType.Q4_K in kinds
    assert field_value(reader, "general.file_type") == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert [p.name for p in tmp_path.iterdir()] == ["large.gguf"]  # the F16 temp file is gone


# --------------------------------------------------------------------------- embedding


def test_embedding_model_is_a_mean_pooled_bert_with_the_wordpiece_vocabulary(models_dir: Path) -> None:
    vocab = (minilm_source().directory / "vocab.txt").read_text(encoding="utf-8").splitlines()
    llm = Llama(model_path=str(models_dir / "minilm-embed.gguf"), embedding=True, n_ctx=512, verbose=False)

    assert llm.metadata["general.architecture"] == "bert"
    assert llm.metadata["tokenizer.ggml.model"] == "bert"
    assert llm.metadata["bert.pooling_type"] == str(int(gguf.PoolingType.MEAN))
    assert (llm.n_embd(), llm.n_vocab()) == (384, len(vocab))
    ids = llm.tokenize(b"A kitten is sitting on a rug")
    expected = ["[CLS]", "a", "kitten", "is", "sitting", "on", "a", "rug", "[SEP]"]
    assert ids == [vocab.index(word) for word in expected]


def test_embedding_model_ranks_similar_sentences_higher(models_dir: Path) -> None:
    llm = Llama(model_path=str(models_dir / "minilm-embed.gguf"), embedding=True, n_ctx=512, verbose=False)
    cat, kitten, revenue = llm.embed(
        ["A cat sits on the mat", "A kitten is sitting on a rug", "Quarterly revenue grew by five percent"],
        normalize=True,
    )
    # sentence-transformers gives 0.695 and -0.022 for these two pairs
    assert cosine(cat, kitten) == pytest.approx(0.695, abs=0.01)
    assert cosine(cat, revenue) == pytest.approx(-0.022, abs=0.01)


# --------------------------------------------------------------------------- prepare


def test_prepare_default_models_is_idempotent(tmp_path: Path) -> None:
    paths = prepare_default_models(tmp_path)
    stamps = {key: path.stat().st_mtime_ns for key, path in paths.items()}

    again = prepare_default_models(tmp_path)

    assert again == paths == {"tiny": tmp_path / "tiny.gguf", "embed": tmp_path / "minilm-embed.gguf"}
    assert {key: path.stat().st_mtime_ns for key, path in again.items()} == stamps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["minilm-embed.gguf", "tiny.gguf"]  # no temp files


def test_embedding_writer_output_is_stable(tmp_path: Path, models_dir: Path) -> None:
    assert sha256(write_embedding_model(tmp_path / "e.gguf")) == sha256(models_dir / "minilm-embed.gguf")


@pytest.mark.parametrize("seed", [0, 1])
def test_tiny_models_of_any_seed_load(tmp_path: Path, seed: int) -> None:
    llm = Llama(model_path=str(write_tiny_model(tmp_path / "t.gguf", seed=seed)), n_ctx=128, verbose=False)
    assert llm.n_vocab() == len(build_vocabulary())

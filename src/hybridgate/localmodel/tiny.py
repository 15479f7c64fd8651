"""A tiny llama-architecture GGUF with random weights, generated deterministically.

It stands in for a real chat model in tests and demos: llama.cpp loads and runs it exactly like a
real model (same architecture, same tokenizer type, a chat template), in milliseconds. Its
answers are word salad, but readable word salad, which is all the gateway needs to exercise
streaming, cancellation, queueing and crashes for real.

Three things make random weights behave:

- The vocabulary is SentencePiece-style ("llama" tokenizer model) and keeps the 256 byte-fallback
  tokens ``<0x00>``..``<0xFF>``: without them llama.cpp aborts the whole process on the first
  character it cannot tokenize.
- Embedding dimension 0 is a *bias channel*: every token embedding holds the same large value
  there and no layer writes to it, so after the final norm it is nearly constant, and column 0 of
  the output matrix acts as a per-token logit bias. Whole words get a high bias (readable text);
  byte tokens get a strongly negative one and zero random weights, so they are never sampled and
  streaming never stalls on a partial UTF-8 sequence; EOS sits a little below an average word, so
  it is reachable (at temperature 1 a generation ends on its own after ~1,500 tokens on average)
  but generations run to ``max_tokens`` (always, in practice, at llama-cpp-python's default 0.2).
- Every tensor is drawn from its own generator seeded by ``(seed, tensor index)``, so the file is
  byte-for-byte the same for the same seed, and tensors can be generated one at a time (the
  large variant in :mod:`hybridgate.localmodel.large` streams gigabytes this way).

Example::

    from hybridgate.localmodel.tiny import write_tiny_model
    path = write_tiny_model(Path("models/tiny.gguf"), seed=0)
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]

# A ChatML-like template. llama-cpp-python renders it with ``bos_token`` and does not add BOS
# itself (it treats the template's output as already holding the special tokens).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] or '' }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPACE = "\u2581"  # SentencePiece's visible space

_WORD_TEXT = """
the of and to a in is it you that he was for on are with as i his they be at one have this from
or had by hot word but what some we can out other were all there when up use your how said an each
she which do their time if will way about many then them write would like so these her long make
thing see him two has look more day could go come did number sound no most people my over know
water than call first who may down side been now find any new work part take get place made live
where after back little only round man year came show every good me give our under name very
through just form sentence great think say help low line differ turn cause much mean before move
right boy old too same tell does set three want air well also play small end put home read hand
port large spell add even land here must big high such follow act why ask men change went light
kind off need house picture try us again animal point mother world near build self earth father
model cloud local token stream request answer fast slow gateway data quiet river stone garden
"""
_WORDS = _WORD_TEXT.split()

_PUNCTUATION = list(".,!?;:'\"-()")

# Logit biases (before temperature). Words beat single letters and word prefixes; EOS is a little
# less likely than one average word; control and byte tokens are never sampled.
_BIAS_WORD = 6.0
_BIAS_PUNCT = 4.5
_BIAS_EOS = 4.0
_BIAS_PIECE = 0.0
_BIAS_NEVER = -40.0


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """Token texts, SentencePiece scores, token types and the output bias of each token."""

    tokens: list[str]
    scores: list[float]
    types: list[int]
    biases: list[float]

    def __len__(self) -> int:
        return len(self.tokens)

    def id_of(self, text: str) -> int:
        return self.tokens.index(text)


@dataclass(frozen=True, slots=True)
class LlamaShape:
    """Hyperparameters of a llama-architecture model."""

    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 4
    n_ff: int = 192
    n_ctx_train: int = 4096
    n_vocab: int | None = None  # None: exactly the base vocabulary; more: padded with pseudo-words
    rms_eps: float = 1e-5
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


TINY_SHAPE = LlamaShape()


class _VocabBuilder:
    """Accumulates unique tokens in order; the position gives the SentencePiece merge priority."""

    def __init__(self) -> None:
        self.vocab = Vocabulary(tokens=[], scores=[], types=[], biases=[])
        self._seen: set[str] = set()

    def add(self, text: str, token_type: gguf.TokenType, bias: float) -> None:
        if text in self._seen:
            return
        self._seen.add(text)
        self.vocab.tokens.append(text)
        # Earlier tokens win merges; any consistent order works since every prefix is present.
        self.vocab.scores.append(-float(len(self.vocab.tokens)))
        self.vocab.types.append(int(token_type))
        self.vocab.biases.append(bias)

    def add_word(self, word: str, bias: float) -> None:
        """Add ``▁word`` and every prefix of it, so SentencePiece merges can reach the whole word."""
        piece = SPACE + word
        for end in range(2, len(piece)):
            self.add(piece[:end], gguf.TokenType.NORMAL, _BIAS_PIECE)
        self.add(piece, gguf.TokenType.NORMAL, bias)

    def __len__(self) -> int:
        return len(self.vocab.tokens)


def _pseudo_words() -> Iterator[str]:
    """Pronounceable filler words (``bako``, ``kelimu``...) to pad a vocabulary to a target size."""
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    syllables = [c + v for c in consonants for v in vowels]
    for first in syllables:
        for second in syllables:
            yield first + second
    for first in syllables:
        for second in syllables:
            for third in syllables:
                yield first + second + third


def build_vocabulary(n_vocab: int | None = None) -> Vocabulary:
    """The SentencePiece vocabulary of the generated models.

    Layout: ``<unk> <s> </s> <|im_start|> <|im_end|>``, the 256 byte tokens, ``▁``, single
    characters, English words with their prefixes, then pseudo-words up to ``n_vocab``.
    """
    builder = _VocabBuilder()
    builder.add(UNK, gguf.TokenType.UNKNOWN, _BIAS_NEVER)
    builder.add(BOS, gguf.TokenType.CONTROL, _BIAS_NEVER)
    builder.add(EOS, gguf.TokenType.CONTROL, _BIAS_EOS)
    builder.add(IM_START, gguf.TokenType.CONTROL, _BIAS_NEVER)
    builder.add(IM_END, gguf.TokenType.CONTROL, _BIAS_NEVER)
    for byte in range(256):
        builder.add(f"<0x{byte:02X}>", gguf.TokenType.BYTE, _BIAS_NEVER)
    builder.add(SPACE, gguf.TokenType.NORMAL, _BIAS_PIECE)
    for char in string.ascii_letters + string.digits:
        builder.add(char, gguf.TokenType.NORMAL, _BIAS_PIECE)
    for mark in _PUNCTUATION:
        builder.add(mark, gguf.TokenType.NORMAL, _BIAS_PUNCT)
        builder.add(SPACE + mark, gguf.TokenType.NORMAL, _BIAS_PIECE)
    for word in _WORDS:
        builder.add_word(word, _BIAS_WORD)
    if n_vocab is not None:
        fillers = _pseudo_words()
        while len(builder) < n_vocab:
            builder.add_word(next(fillers), _BIAS_WORD)
        # add_word may overshoot by a few prefixes: trim to the exact size asked for
        del builder.vocab.tokens[n_vocab:], builder.vocab.scores[n_vocab:]
        del builder.vocab.types[n_vocab:], builder.vocab.biases[n_vocab:]
    return builder.vocab


# --------------------------------------------------------------------------- weights


@dataclass(frozen=True, slots=True)
class _TensorSpec:
    name: str
    shape: tuple[int, ...]
    make: Callable[[np.random.Generator], FloatArray]


def _gaussian(shape: tuple[int, ...], std: float) -> Callable[[np.random.Generator], FloatArray]:
    def make(rng: np.random.Generator) -> FloatArray:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    return make


def _ones(n: int) -> Callable[[np.random.Generator], FloatArray]:
    return lambda _rng: np.ones(n, dtype=np.float32)


def _no_bias_channel_write(shape: tuple[int, int], std: float) -> Callable[[np.random.Generator], FloatArray]:
    """A residual-writing projection whose output row 0 is zero: layers never touch dimension 0."""

    def make(rng: np.random.Generator) -> FloatArray:
        weights = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
        weights[0, :] = 0.0
        return weights

    return make


def _bias_channel_value(n_embd: int) -> float:
    # As large as the rest of the embedding together: half the energy, so the channel stays
    # dominant (nearly constant after RMS norm) while the other dimensions still carry context.
    return math.sqrt(n_embd - 1)


def _token_embeddings(shape: LlamaShape, n_vocab: int) -> Callable[[np.random.Generator], FloatArray]:
    def make(rng: np.random.Generator) -> FloatArray:
        emb = rng.standard_normal((n_vocab, shape.n_embd), dtype=np.float32)
        emb[:, 0] = _bias_channel_value(shape.n_embd)
        return emb

    return make


def _output_matrix(shape: LlamaShape, vocab: Vocabulary) -> Callable[[np.random.Generator], FloatArray]:
    # After the final RMS norm, h[0] is about C / sqrt((C^2 + n_embd - 1) / n_embd) and the other
    # components about 1/sqrt(2) each; these scales put the context-dependent part of the logits at
    # a standard deviation of about 2 and the bias column at the biases above.
    channel = _bias_channel_value(shape.n_embd)
    h0 = channel / math.sqrt((channel**2 + shape.n_embd - 1) / shape.n_embd)
    random_std = 2.0 / math.sqrt((shape.n_embd - 1) / 2)
    biases = np.asarray(vocab.biases, dtype=np.float32)
    never = biases <= _BIAS_NEVER

    def make(rng: np.random.Generator) -> FloatArray:
        out = rng.standard_normal((len(vocab), shape.n_embd), dtype=np.float32) * np.float32(random_std)
        out[:, 0] = biases / np.float32(h0)
        # Byte and control tokens: no context-dependent part at all, only the large negative bias.
        out[never, 1:] = 0.0
        return out

    return make


def _projection(name: str, rows: int, cols: int, *, writes_residual: bool = False) -> _TensorSpec:
    # Initialised at half the usual 1/sqrt(fan_in) scale: each layer's residual update stays
    # modest, so the bias channel keeps dominating the final norm.
    std = 0.5 / math.sqrt(cols)
    make = _no_bias_channel_write((rows, cols), std) if writes_residual else _gaussian((rows, cols), std)
    return _TensorSpec(name, (rows, cols), make)


def llama_tensor_specs(shape: LlamaShape, vocab: Vocabulary) -> list[_TensorSpec]:
    """Every tensor of the model, in file order, each with a deterministic generator."""
    d, ff, kv = shape.n_embd, shape.n_ff, shape.n_head_kv * shape.head_dim
    specs = [
        _TensorSpec("token_embd.weight", (len(vocab), d), _token_embeddings(shape, len(vocab))),
        _TensorSpec("output_norm.weight", (d,), _ones(d)),
        _TensorSpec("output.weight", (len(vocab), d), _output_matrix(shape, vocab)),
    ]
    for i in range(shape.n_layer):
        blk = f"blk.{i}"
        specs += [
            _TensorSpec(f"{blk}.attn_norm.weight", (d,), _ones(d)),
            _projection(f"{blk}.attn_q.weight", d, d),
            _projection(f"{blk}.attn_k.weight", kv, d),
            _projection(f"{blk}.attn_v.weight", kv, d),
            _projection(f"{blk}.attn_output.weight", d, d, writes_residual=True),
            _TensorSpec(f"{blk}.ffn_norm.weight", (d,), _ones(d)),
            _projection(f"{blk}.ffn_gate.weight", ff, d),
            _projection(f"{blk}.ffn_up.weight", ff, d),
            _projection(f"{blk}.ffn_down.weight", d, ff, writes_residual=True),
        ]
    return specs


# --------------------------------------------------------------------------- writing


def _storage_dtype(spec: _TensorSpec, matrices: type[np.floating]) -> type[np.floating]:
    # llama.cpp wants 1-D tensors (norms) in F32 whatever the file type.
    return np.float32 if len(spec.shape) == 1 else matrices


def _add_llama_metadata(writer: gguf.GGUFWriter, shape: LlamaShape, vocab: Vocabulary, name: str) -> None:
    writer.add_name(name)
    writer.add_description("hybridgate stand-in model: random weights, not trained")
    writer.add_context_length(shape.n_ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_vocab_size(len(vocab))
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    writer.add_bos_token_id(vocab.id_of(BOS))
    writer.add_eos_token_id(vocab.id_of(EOS))
    writer.add_unk_token_id(vocab.id_of(UNK))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)


def write_llama_gguf(
    path: Path,
    *,
    shape: LlamaShape,
    seed: int,
    matrix_dtype: type[np.floating] = np.float32,
    name: str = "hybridgate-tiny",
) -> Path:
    """Write a llama-architecture GGUF with random weights, one tensor in memory at a time."""
    vocab = build_vocabulary(shape.n_vocab)
    specs = llama_tensor_specs(shape, vocab)
    file_type = gguf.LlamaFileType.ALL_F32 if matrix_dtype is np.float32 else gguf.LlamaFileType.MOSTLY_F16
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, "llama")
    try:
        _add_llama_metadata(writer, shape, vocab, name)
        writer.add_file_type(int(file_type))
        for spec in specs:
            dtype = np.dtype(_storage_dtype(spec, matrix_dtype))
            writer.add_tensor_info(spec.name, spec.shape, dtype, math.prod(spec.shape) * dtype.itemsize)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for index, spec in enumerate(specs):
            rng = np.random.default_rng([seed, index])
            writer.write_tensor_data(spec.make(rng).astype(_storage_dtype(spec, matrix_dtype)))
    finally:
        writer.close()
    return path


def write_tiny_model(path: Path, *, seed: int = 0) -> Path:
    """Write the tiny stand-in chat model (about 1 MB) to ``path`` and return ``path``.

    Deterministic: the same ``seed`` gives the same bytes. Takes a few milliseconds.
    """
    return write_llama_gguf(path, shape=TINY_SHAPE, seed=seed)

"""The "realistic-latency" stand-in: a 1.1B-parameter llama model (TinyLlama's shape), Q4_K_M.

Random weights again (see :mod:`hybridgate.localmodel.tiny` for how they are kept well-behaved),
but with the size and quantisation of a small real chat model, so prefill and decode cost what
they cost on real hardware: about 680 MB on disk and tens of tokens per second on a small CPU.
It is for benchmarks only; tests shrink the shape to exercise the quantize path in seconds.

The F16 weights (about 2.2 GB) are streamed tensor by tensor to a temporary file next to the
target, quantised with llama.cpp's own ``llama_model_quantize``, then removed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hybridgate.localmodel.tiny import LlamaShape, write_llama_gguf

# TinyLlama-1.1B's hyperparameters.
TINYLLAMA_SHAPE = LlamaShape(
    n_embd=2048,
    n_layer=22,
    n_head=32,
    n_head_kv=4,
    n_ff=5632,
    n_ctx_train=2048,
    n_vocab=32000,
)

LLAMA_FTYPE_MOSTLY_Q4_K_M = 15  # llama.h: enum llama_ftype


class QuantizeError(RuntimeError):
    """llama.cpp could not quantize the model (a build-time tool error, not a request error)."""


def quantize(source: Path, target: Path, *, ftype: int = LLAMA_FTYPE_MOSTLY_Q4_K_M, threads: int = 0) -> Path:
    """Quantize the GGUF ``source`` into ``target`` with llama.cpp (``threads=0``: all cores)."""
    import llama_cpp  # optional dependency ("local" extra), needed only here

    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
    if status != 0:
        raise QuantizeError(f"llama_model_quantize({source} -> {target}) returned {status}")
    return target


def write_large_model(path: Path, *, seed: int = 0, shape: LlamaShape = TINYLLAMA_SHAPE) -> Path:
    """Write the 1.1B-parameter Q4_K_M stand-in (or a model of ``shape``) to ``path``.

    K-quants work on blocks of 256 values, so ``n_embd`` and ``n_ff`` of a custom ``shape`` should
    be multiples of 256 (llama.cpp falls back to other types for tensors that are not).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    f16 = path.with_name(f".{path.name}.f16-{os.getpid()}.tmp")
    try:
        write_llama_gguf(f16, shape=shape, seed=seed, matrix_dtype=np.float16, name="hybridgate-large")
        quantize(f16, path)
    finally:
        f16.unlink(missing_ok=True)
    return path

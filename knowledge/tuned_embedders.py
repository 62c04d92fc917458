"""Embedders fine-tuned for one knowledge base, as that base pins them: "tuned:<id>".

finetune/ trains them (a job on the training lane) and keeps their registry; their files live in
STUDIO_EMBEDDERS_DIR/<id>/, in the bundled all-MiniLM-L6-v2's layout, beside a manifest
(MANIFEST: the base it was tuned for, what it was tuned from, its dimension). knowledge may not
import finetune, so everything it needs to embed with one, and to check that a base may pin it,
is read from the folder: the torch twin in job workers (ingestion), the numpy twin in the web
process (a search's query), each loaded once per process (and again when its weights change).

engines.embed_passages / embed_query dispatch here; a tuned embedder whose folder is gone raises
TunedEmbedderMissing, which they turn into what a person reads (a failed document, a search by
keywords with a note).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
from django.conf import settings

from studio.errors import StudioError
from studio.llm.numpy_embedder import NumpyEmbedder

PREFIX = "tuned:"
MANIFEST = "studio-embedder.json"  # {"knowledge_base", "tuned_from", "dimension"}
WEIGHTS = "model.safetensors"


class TunedEmbedderMissing(StudioError):
    """The tuned embedder a base pins is not in STUDIO_EMBEDDERS_DIR (deleted, or the storage is not mounted)."""

    status = 503

    def __init__(self, message: str):
        super().__init__(message, code="tuned_embedder_missing")


def is_tuned(embedding_model: str) -> bool:
    return isinstance(embedding_model, str) and embedding_model.startswith(PREFIX)


def pinned_name(embedder_id: int) -> str:
    return f"{PREFIX}{embedder_id}"


def tuned_id(embedding_model: str) -> int | None:
    """The registry id in "tuned:<id>"; None when it is not one."""
    number = embedding_model[len(PREFIX) :] if is_tuned(embedding_model) else ""
    return int(number) if number.isdigit() and len(number) < 19 else None


def folder_of(embedder_id: int) -> Path:
    return Path(settings.STUDIO_EMBEDDERS_DIR) / str(embedder_id)


def write_manifest(folder: Path, *, knowledge_base_id: int, tuned_from: str, dimension: int) -> None:
    (folder / MANIFEST).write_text(
        json.dumps({"knowledge_base": knowledge_base_id, "tuned_from": tuned_from, "dimension": dimension})
    )


def manifest(embedding_model: str) -> dict:
    """The manifest of the tuned embedder `embedding_model` names; TunedEmbedderMissing when its files are not there."""
    embedder_id = tuned_id(embedding_model)
    folder = folder_of(embedder_id) if embedder_id is not None else None
    try:
        if folder is None or not (folder / WEIGHTS).is_file():
            raise FileNotFoundError
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        raise TunedEmbedderMissing(
            f"the tuned embedder {embedding_model} is not in STUDIO_EMBEDDERS_DIR ({settings.STUDIO_EMBEDDERS_DIR}): "
            "it was deleted, or that storage is not mounted here; rebuild the base with another embedder"
        ) from None


def _folder_and_stamp(embedding_model: str) -> tuple[str, int]:
    """Its folder and its weights' modification time: the cache key, so files written again are loaded again."""
    manifest(embedding_model)  # TunedEmbedderMissing when it is gone
    folder = folder_of(tuned_id(embedding_model))
    return str(folder), (folder / WEIGHTS).stat().st_mtime_ns


@functools.lru_cache(maxsize=4)
def _numpy_embedder(folder: str, stamp: int) -> NumpyEmbedder:
    return NumpyEmbedder(Path(folder))


@functools.lru_cache(maxsize=2)
def _torch_embedder(folder: str, stamp: int):
    from studio.llm.embeddings import Embedder  # noqa: PLC0415 - torch: job workers only, never the web process

    return Embedder(Path(folder))


def load_tuned_numpy_embedder(embedding_model: str) -> NumpyEmbedder:
    """The numpy twin (the web process: no torch there), cached."""
    return _numpy_embedder(*_folder_and_stamp(embedding_model))


def load_tuned_embedder(embedding_model: str):
    """The torch embeddings.Embedder (job workers), cached."""
    return _torch_embedder(*_folder_and_stamp(embedding_model))


def embed_passages(embedding_model: str, texts: list[str]) -> np.ndarray:
    """(N, D) float32 little-endian unit rows, by torch (job workers)."""
    return load_tuned_embedder(embedding_model).embed(texts).numpy().astype("<f4")


def embed_query(embedding_model: str, text: str) -> np.ndarray:
    """(D,) unit vector, by numpy (the web process)."""
    return load_tuned_numpy_embedder(embedding_model).embed([text])[0]


def dimension_for(embedding_model: str, knowledge_base_id: int) -> int:
    """The dimension of a tuned embedder that `knowledge_base_id` may pin: TunedEmbedderMissing when
    its files are gone, StudioError when it was tuned for another base (a tuned embedder serves the
    base whose passages and questions it learned from, never another)."""
    described = manifest(embedding_model)
    if described.get("knowledge_base") != knowledge_base_id:
        raise StudioError(
            f"{embedding_model} was tuned for another knowledge base; fine-tune one for this base", "embedding_model"
        )
    return int(described.get("dimension") or 384)

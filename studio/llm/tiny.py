"""A tiny randomly initialised Llama with SmolLM2's tokenizer and chat template.

Tests and benchmarks of the plumbing build it locally (no download): real transformers
code, a few milliseconds per token, deterministic for a given seed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from .loading import bundled_gguf_path

TINY_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=32768,  # long replies for stop and crash tests
    tie_word_embeddings=True,
)


def build_tiny_model(target: Path, *, seed: int = 0) -> Path:
    """Write the tiny model folder to `target` unless it is already there."""
    target = Path(target)
    if (target / "config.json").exists():
        return target
    # transformers loads only to build the tiny model once (its folder is kept)
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: PLC0415

    gguf = bundled_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_CONFIG,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)
    except OSError:  # built meanwhile by a parallel test process
        shutil.rmtree(staging, ignore_errors=True)
    return target

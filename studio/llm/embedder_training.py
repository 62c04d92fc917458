"""Fine-tuning the sentence embedder (all-MiniLM-L6-v2, or a folder tuned from it) on (question,
passage) pairs, with in-batch negatives.

The loss is sentence-transformers' MultipleNegativesRankingLoss written out: in a batch of B
pairs, each question's right passage is the one beside it and the other B - 1 passages are its
negatives; the loss is the cross-entropy of the (B, B) matrix of cosine similarities times
SCALE, with the diagonal as the labels. A passage that appears twice in one batch (two questions
of one passage), or a second passage of the same question, is never that question's negative: its
column is masked.
Float32, AdamW with a linear warm-up and decay (sentence-transformers' WarmupLinear), seeded:
the same pairs and settings give the same weights.

The result is a folder of the bundled model's layout (config.json, model.safetensors,
tokenizer.json and the rest copied), so `embeddings.Embedder` (torch) and
`numpy_embedder.NumpyEmbedder` (the web process) both load it as they load the bundled one.

Knows only pairs and folders; the job (finetune/embedder_runner.py) does the rest. No Django; torch
and transformers are imported by the functions that train, so the settings' checks cost nothing.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .numpy_embedder import MAX_TOKENS

if TYPE_CHECKING:  # torch is imported where training runs: the web process reads the config alone
    import torch

SCALE = 20.0  # sentence-transformers' default: cosine similarities in [-1, 1] as logits in [-20, 20]
WEIGHTS, CONFIG = "model.safetensors", "config.json"  # written by training; every other file is copied
MAX_QUESTION_TOKENS = 64  # a question is short; its tail is never what finds the passage


class EmbedderTrainingError(ValueError):
    """A training setting refused: `field` names it."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class Pair:
    question: str
    passage: str  # the text the base embeds for the passage (its heading trail, a blank line, its text)


@dataclass
class EmbedderTrainingConfig:
    epochs: int = 2  # passes over the pairs
    learning_rate: float = 2e-5  # full fine-tuning of a small encoder: sentence-transformers' default
    batch_size: int = 32  # pairs a step; each question has batch_size - 1 in-batch negatives
    warmup_share: float = 0.1  # of the steps, the learning rate rising from 0
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0
    threads: int = 0  # torch threads (0: torch's default)

    def __post_init__(self):
        checks = {
            "epochs": (isinstance(self.epochs, int) and 1 <= self.epochs <= 20, "a whole number from 1 to 20"),
            "learning_rate": (1e-7 <= self.learning_rate <= 1e-3, "from 1e-7 to 1e-3 (2e-5 is usual)"),
            "batch_size": (isinstance(self.batch_size, int) and 2 <= self.batch_size <= 256, "from 2 to 256"),
            "warmup_share": (0 <= self.warmup_share < 1, "from 0 to less than 1"),
            "weight_decay": (0 <= self.weight_decay < 1, "from 0 to less than 1"),
            "max_grad_norm": (self.max_grad_norm > 0, "above 0"),
            "seed": (isinstance(self.seed, int) and 0 <= self.seed < 2**32, "a whole number from 0 to 2**32 - 1"),
            "threads": (isinstance(self.threads, int) and self.threads >= 0, "0 or more"),
        }
        for name, (ok, how) in checks.items():
            if not ok:
                raise EmbedderTrainingError(name, f"{name}={getattr(self, name)!r}: must be {how}")


@dataclass(frozen=True)
class StepReport:
    step: int  # from 1
    total_steps: int
    epoch: float  # steps done / steps an epoch
    loss: float
    learning_rate: float


@dataclass(frozen=True)
class TrainingOutcome:
    steps: int  # optimizer steps taken
    total_steps: int
    stopped: bool  # `progress` asked to stop before the last step: nothing was saved
    losses: list[float]  # one a step
    seconds: float


def steps_for(pair_count: int, config: EmbedderTrainingConfig) -> int:
    """Optimizer steps over `pair_count` pairs: a last batch of one pair is dropped (it has no negative)."""
    per_epoch = pair_count // config.batch_size + (1 if pair_count % config.batch_size >= 2 else 0)
    return per_epoch * config.epochs


def _batches(pairs: list[Pair], config: EmbedderTrainingConfig, rng: random.Random) -> list[list[Pair]]:
    order = pairs[:]
    rng.shuffle(order)
    batches = [order[start : start + config.batch_size] for start in range(0, len(order), config.batch_size)]
    return [batch for batch in batches if len(batch) >= 2]


def _embed(model, tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    """Unit vectors (N, H), mean-pooled over real tokens, with gradients: the Embedder's two steps."""
    import torch  # noqa: PLC0415

    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    hidden = model(**batch).last_hidden_state  # (N, T, H)
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (N, T, 1)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def in_batch_loss(
    questions: torch.Tensor, passages: torch.Tensor, passage_ids: list[int], question_ids: list[int] | None = None
) -> torch.Tensor:
    """Cross-entropy of each question against every passage of the batch, its own being the right one.
    questions, passages: (B, H) unit rows; passage_ids, question_ids: which passage and question each
    row is. Another row's passage is no negative when it is the same passage, or the passage of the
    same question (a question with two right passages): those columns are masked."""
    import torch  # noqa: PLC0415

    scores = questions @ passages.T * SCALE  # (B, B)
    same = torch.zeros(scores.shape, dtype=torch.bool)
    for ids in (passage_ids, question_ids or list(range(len(passage_ids)))):
        row = torch.tensor(ids)
        same |= row[:, None] == row[None, :]  # (B, B)
    same.fill_diagonal_(False)
    scores = scores.masked_fill(same, float("-inf"))
    return torch.nn.functional.cross_entropy(scores, torch.arange(len(passage_ids)))


def train_embedder(
    pairs: list[Pair],
    *,
    start_folder: Path,
    output_folder: Path,
    config: EmbedderTrainingConfig,
    progress: Callable[[StepReport], bool] | None = None,
) -> TrainingOutcome:
    """Fine-tune the embedder of `start_folder` on `pairs` and save it to `output_folder` (made
    afresh). `progress` is called after every step; True from it stops the training before the
    next one, and nothing is saved (`stopped`). Raises EmbedderTrainingError for fewer than 2 pairs;
    torch.OutOfMemoryError and MemoryError go to the caller."""
    if len(pairs) < 2:
        raise EmbedderTrainingError("pairs", f"{len(pairs)} pairs: in-batch negatives need at least 2")
    import torch  # noqa: PLC0415
    from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415

    started = time.monotonic()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(start_folder, local_files_only=True)
    model = AutoModel.from_pretrained(start_folder, local_files_only=True, dtype=torch.float32)
    model.train()  # dropout on, as sentence-transformers trains
    # fused: one kernel over every tensor; on a CPU a step of the plain loop took 20x longer (0.3 s
    # against 15 ms here), most of it the 11.7M-row word embeddings.
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
    )
    total = steps_for(len(pairs), config)
    warmup = math.ceil(total * config.warmup_share)

    def rate(step: int) -> float:  # the multiplier of the learning rate at `step` (from 0)
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    passage_id = {text: n for n, text in enumerate(dict.fromkeys(pair.passage for pair in pairs))}
    question_id = {text: n for n, text in enumerate(dict.fromkeys(pair.question for pair in pairs))}
    losses: list[float] = []
    step = 0
    for _ in range(config.epochs):
        for batch in _batches(pairs, config, rng):
            questions = _embed(model, tokenizer, [pair.question for pair in batch], MAX_QUESTION_TOKENS)  # (B, H)
            passages = _embed(model, tokenizer, [pair.passage for pair in batch], MAX_TOKENS)  # (B, H)
            loss = in_batch_loss(
                questions,
                passages,
                [passage_id[pair.passage] for pair in batch],
                [question_id[pair.question] for pair in batch],
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            learning_rate = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(float(loss.detach()))
            report = StepReport(step, total, step / max(total / config.epochs, 1), losses[-1], learning_rate)
            if progress is not None and progress(report) and step < total:
                return TrainingOutcome(step, total, True, losses, time.monotonic() - started)
    save_folder(model.eval(), start_folder=start_folder, output_folder=output_folder)
    return TrainingOutcome(step, total, False, losses, time.monotonic() - started)


def save_folder(model, *, start_folder: Path, output_folder: Path) -> None:
    """The tuned weights and config beside a copy of every other file of the start folder (the
    tokenizer, sentence-transformers' pooling files): the layout the bundled model has."""
    if output_folder.exists():
        shutil.rmtree(output_folder)
    shutil.copytree(start_folder, output_folder, ignore=shutil.ignore_patterns(WEIGHTS, CONFIG, "*.bin", "*.h5"))
    model.save_pretrained(output_folder, safe_serialization=True)
    for extra in output_folder.glob("*.bin"):
        extra.unlink()

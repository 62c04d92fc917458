"""LoRA / QLoRA fine-tuning with peft and trl, run as its own process.

`python -m studio.llm.training <job folder>` reads `config.json` and `data.jsonl` from the
folder, trains with trl's `SFTTrainer` (or `DPOTrainer`) and a peft LoRA adapter, and writes
its progress to stdout as JSON lines (`{"event": "log", ...}`) for the job worker to store.
A separate process frees all of its memory when it ends, keeps an out-of-memory error away from
the job worker, and is what `accelerate launch` starts once per GPU for data-parallel training
(`launch_command`). Files in the folder steer it: `stop` (finish at the next step boundary and
save the adapter), `pause` (wait between steps: chat replies are being written).

Knows only files, rows and the model folder: the job worker (finetune/) does the rest.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .replies import OUT_OF_MEMORY, failure_code

PROGRESS_PREFIX = "@@studio "  # progress lines on stdout start with this; anything else is log text


class TrainingConfigError(ValueError):
    """A training setting refused: `field` names it (a hyperparameter, "objective", "method")."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


@dataclass
class TrainingConfig:
    base_model_folder: str  # a local Hugging Face folder (the studio's converted model)
    objective: str = "sft"  # "sft" (prompt → expected answer) or "dpo" (expected preferred to actual)
    method: str = "lora"  # "lora", or "qlora" (4-bit base, CUDA only)
    epochs: float = 3.0  # passes over the training rows
    learning_rate: float = 2e-4  # LoRA trains few weights: a larger rate than full fine-tuning
    lora_rank: int = 16  # size of the low-rank update; more = more capacity and memory
    lora_alpha: int = 32  # scale of the update (alpha / rank multiplies it); usually 2 x rank
    lora_dropout: float = 0.05  # dropout on the LoRA path, against overfitting small data
    target_modules: list[str] | str = "all-linear"  # the layers that get adapters
    max_length: int = 512  # tokens per example; longer ones are cut
    batch_size: int = 4  # examples per step on each device
    gradient_accumulation: int = 1  # steps summed before an update (effective batch = batch x this)
    seed: int = 0
    eval_share: float = 0.1  # of the rows, held out for the evaluation loss (when 10 or more)
    device: str = "cpu"  # "cpu" or "cuda"
    threads: int = 0  # torch threads on the CPU (0: torch's default)
    dpo_beta: float = 0.1  # DPO: how far the tuned model may move from the base

    def __post_init__(self):
        if self.objective not in ("sft", "dpo"):
            raise TrainingConfigError("objective", f"objective={self.objective!r}: use sft or dpo")
        if self.method not in ("lora", "qlora"):
            raise TrainingConfigError("method", f"method={self.method!r}: use lora or qlora")
        if self.method == "qlora" and self.device != "cuda":
            raise TrainingConfigError(
                "method", "QLoRA needs a CUDA GPU (bitsandbytes 4-bit on a CPU is many times slower): use lora"
            )
        checks = {
            "epochs": (0 < self.epochs <= 100),
            "learning_rate": (0 < self.learning_rate < 1),
            "lora_rank": (1 <= self.lora_rank <= 512),
            "lora_alpha": (1 <= self.lora_alpha <= 4096),
            "lora_dropout": (0 <= self.lora_dropout < 1),
            "max_length": (16 <= self.max_length <= 32768),
            "batch_size": (1 <= self.batch_size <= 512),
            "gradient_accumulation": (1 <= self.gradient_accumulation <= 512),
            "eval_share": (0 <= self.eval_share < 0.5),
        }
        for name, ok in checks.items():
            if not ok:
                raise TrainingConfigError(name, f"{name}={getattr(self, name)!r} is out of range")


def emit(event: str, **fields) -> None:
    print(PROGRESS_PREFIX + json.dumps({"event": event, **fields}), flush=True)


def _split_rows(rows: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    if share <= 0 or len(rows) < 10:
        return rows, []
    shuffled = rows[:]
    random.Random(seed).shuffle(shuffled)
    held = max(1, int(len(rows) * share))
    return shuffled[held:], shuffled[:held]


def plain_model_config(folder: str):
    """The folder's config without a GGUF `quantization_config`: the studio's converted GGUF models
    hold plain float weights, but keep that note, and transformers refuses to train such a model."""
    # model code loads only in the training process, not in the job worker that reads this module
    from transformers import AutoConfig  # noqa: PLC0415

    model_config = AutoConfig.from_pretrained(folder)
    quantization = getattr(model_config, "quantization_config", None)
    method = (
        quantization.get("quant_method")
        if isinstance(quantization, dict)
        else getattr(quantization, "quant_method", None)
    )
    if str(method).lower().endswith("gguf"):
        del model_config.quantization_config
    return model_config


def _load_model(config: TrainingConfig):
    # model code loads only in the training process, not in the job worker that reads this module
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    tokenizer = AutoTokenizer.from_pretrained(config.base_model_folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config.method == "qlora":
        # model code loads only in the training process, not in the job worker that reads this module
        from peft import prepare_model_for_kbit_training  # noqa: PLC0415
        from transformers import BitsAndBytesConfig  # noqa: PLC0415

        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
        model = AutoModelForCausalLM.from_pretrained(
            config.base_model_folder,
            quantization_config=quantization,
            config=plain_model_config(config.base_model_folder),
            dtype=torch.bfloat16,
            device_map={"": _local_device()},
        )
        model = prepare_model_for_kbit_training(model)
    else:
        # bf16 on a GPU; float32 on the CPU (measured here: trl's default bf16 on this CPU trained
        # about 16x slower than float32).
        dtype = torch.bfloat16 if config.device == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(
            config.base_model_folder, dtype=dtype, config=plain_model_config(config.base_model_folder)
        )
    return model, tokenizer


def _local_device():
    return int(os.environ.get("LOCAL_RANK", "0"))


class _Progress:
    """A trl callback: progress out as JSON lines; the `stop` and `pause` files obeyed between steps."""

    def __init__(self, folder: Path):
        # model code loads only in the training process, not in the job worker that reads this module
        from transformers import TrainerCallback  # noqa: PLC0415

        progress = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                emit("start", total_steps=state.max_steps, epochs=args.num_train_epochs)

            def on_log(self, args, state, control, logs=None, **kwargs):
                logs = {
                    k: v
                    for k, v in (logs or {}).items()
                    if isinstance(v, (int, float))
                    and math.isfinite(v)
                    and k not in ("epoch", "step", "total_steps", "tokens_seen")
                }
                emit(
                    "log",
                    step=state.global_step,
                    total_steps=state.max_steps,
                    epoch=state.epoch,
                    tokens_seen=state.num_input_tokens_seen,
                    **logs,
                )

            def on_step_end(self, args, state, control, **kwargs):
                emit(
                    "step",
                    step=state.global_step,
                    total_steps=state.max_steps,
                    epoch=state.epoch,
                    tokens_seen=state.num_input_tokens_seen,
                )
                progress.wait_while_paused()
                if (folder / "stop").exists():
                    control.should_training_stop = True  # the adapter is still saved below
                return control

        self.folder = folder
        self.callback = Callback()

    def wait_while_paused(self):
        announced = False
        while (self.folder / "pause").exists() and not (self.folder / "stop").exists():
            if not announced:
                emit("paused")
                announced = True
            time.sleep(0.25)
        if announced:
            emit("resumed")


MESSAGE_COLUMNS = ("messages", "prompt", "completion", "chosen", "rejected")


def rows_dataset(rows: list[dict]):
    """`rows` as a datasets.Dataset, each row read back as it was written. Arrow would otherwise
    merge the messages of all rows into one struct type (a call's arguments would gain every other
    tool's argument names as nulls, a plain turn a null `tool_calls`) and take its columns from the
    first row alone (a `tools` column after a row without tools would be dropped): the messages
    are kept as JSON values, and every row has every column (None where it has none)."""
    # model code loads only in the training process, not in the job worker that reads this module
    from datasets import Dataset, Features, Json, List, Value  # noqa: PLC0415

    columns = list(dict.fromkeys(key for row in rows for key in row))
    features = Features(
        {
            column: List(Json()) if column in MESSAGE_COLUMNS else Value("string") if column == "tools" else Json()
            for column in columns
        }
    )  # `tools`: JSON text, which trl's trainers read back (json.loads) before the chat template
    return Dataset.from_list([{column: row.get(column) for column in columns} for row in rows], features=features)


def build_trainer(config: TrainingConfig, rows: list[dict], folder: Path, callbacks=()):
    """trl's trainer for `rows` (SFT: prompt/completion messages; DPO: prompt/chosen/rejected) with
    a LoRA adapter: the whole configuration, shared by the studio's jobs and `make bench`'s plain run."""
    # model code loads only in the training process, not in the job worker that reads this module
    import torch  # noqa: PLC0415
    from peft import LoraConfig  # noqa: PLC0415

    if config.threads:
        torch.set_num_threads(config.threads)
    if not rows:
        raise ValueError("there are no training rows")
    train_rows, eval_rows = _split_rows(rows, config.eval_share, config.seed)
    model, tokenizer = _load_model(config)
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )
    steps_per_epoch = math.ceil(len(train_rows) / (config.batch_size * config.gradient_accumulation))
    common = dict(
        output_dir=str(folder / "checkpoints"),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=config.seed,
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        use_cpu=config.device != "cuda",
        bf16=config.device == "cuda",
        max_length=config.max_length,
        eval_strategy="steps" if eval_rows else "no",
        eval_steps=max(1, round(steps_per_epoch * config.epochs / 5)) if eval_rows else None,
    )
    datasets = dict(train_dataset=rows_dataset(train_rows), eval_dataset=rows_dataset(eval_rows) if eval_rows else None)
    if config.objective == "sft":
        # model code loads only in the training process, not in the job worker that reads this module
        from trl import SFTConfig, SFTTrainer  # noqa: PLC0415

        return (
            SFTTrainer(
                model=model,
                args=SFTConfig(**common),
                processing_class=tokenizer,
                peft_config=lora,
                callbacks=list(callbacks),
                **datasets,
            ),
            tokenizer,
            bool(eval_rows),
        )
    # model code loads only in the training process, not in the job worker that reads this module
    from trl import DPOConfig, DPOTrainer  # noqa: PLC0415

    return (
        DPOTrainer(
            model=model,
            args=DPOConfig(**common, beta=config.dpo_beta),
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=list(callbacks),
            **datasets,
        ),
        tokenizer,
        bool(eval_rows),
    )


def train(config: TrainingConfig, rows: list[dict], folder: Path) -> dict:
    """Train an adapter on `rows` into `folder/adapter`, reporting progress; the final metrics."""
    trainer, tokenizer, has_eval = build_trainer(config, rows, folder, callbacks=[_Progress(folder).callback])
    result = trainer.train()
    # Three different "train losses", labelled where shown: the run's mean (what trainer.train()
    # returns), the last step's (where the chart ends), the mean of the last epoch's steps.
    logged = [
        (entry["epoch"], entry["loss"]) for entry in trainer.state.log_history if "loss" in entry and "epoch" in entry
    ]
    last_epoch = [loss for epoch, loss in logged if logged and epoch > logged[-1][0] - 1]
    metrics = {
        "train_loss": result.training_loss,
        "last_train_loss": logged[-1][1] if logged else None,
        "last_epoch_train_loss": sum(last_epoch) / len(last_epoch) if last_epoch else None,
        "steps": trainer.state.global_step,
        "tokens_seen": trainer.state.num_input_tokens_seen,
        "stopped_early": trainer.state.global_step < trainer.state.max_steps,
    }
    if has_eval:
        metrics["eval_loss"] = trainer.evaluate().get("eval_loss")
    if trainer.is_world_process_zero():
        trainer.model.save_pretrained(str(folder / "adapter"))
        tokenizer.save_pretrained(str(folder / "adapter"))
    return metrics


def run(folder: Path) -> int:
    """The process's work: read the job folder, train, report. Exit code 0 when the adapter is saved."""
    try:
        config = TrainingConfig(**json.loads((folder / "config.json").read_text()))
        rows = [json.loads(line) for line in (folder / "data.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError, TypeError) as exc:
        emit("error", kind="data", message=f"The training job's files are unreadable: {exc}")
        return 2
    try:
        metrics = train(config, rows, folder)
    except Exception as exc:  # reported as an event the job worker turns into the job's message
        emit("error", **describe_failure(exc, config))
        return 1
    emit("done", metrics=metrics)
    return 0


def describe_failure(exc: BaseException, config: TrainingConfig) -> dict:
    """The error event of a failed training: its `kind` (oom, disk, data, error: a code, classified
    by the exception's type) and a message that says what to change."""
    text = f"{exc.__class__.__name__}: {exc}"
    if failure_code(exc) == OUT_OF_MEMORY:
        advice = [
            f"a smaller batch size (now {config.batch_size}; raise gradient accumulation to keep the effective batch)",
            f"a shorter maximum length (now {config.max_length} tokens)",
        ]
        if config.device == "cuda" and config.method != "qlora":
            advice.append("QLoRA (a 4-bit base model)")
        return {"kind": "oom", "message": "Training ran out of memory. Try " + ", or ".join(advice) + "."}
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return {"kind": "disk", "message": "The disk is full: free space in the studio's data folder and start again."}
    if isinstance(exc, (ValueError, KeyError)):
        return {"kind": "data", "message": f"The training data or settings were refused: {exc}"}
    return {"kind": "error", "message": text[:2000]}


def launch_command(folder: Path, *, gpus: int, python: str = sys.executable) -> list[str]:
    """The command that trains the job in `folder`: one process, or `accelerate launch` with one
    process per GPU (data parallel: each GPU takes its share of every batch)."""
    if gpus > 1:
        return [
            python,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(gpus),
            "--num_machines",
            "1",
            "--mixed_precision",
            "bf16",
            "-m",
            "studio.llm.training",
            str(folder),
        ]
    return [python, "-m", "studio.llm.training", str(folder)]


def merge_adapter(base_model_folder: str, adapter_folder: str, out_folder: str) -> None:
    """Base model + adapter merged into one plain model folder that transformers loads alone."""
    # model code loads only in the training process, not in the job worker that reads this module
    import torch  # noqa: PLC0415
    from peft import PeftModel  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    base = AutoModelForCausalLM.from_pretrained(
        base_model_folder, dtype=torch.float32, config=plain_model_config(base_model_folder)
    )
    merged = PeftModel.from_pretrained(base, adapter_folder).merge_and_unload()
    merged.save_pretrained(out_folder)
    AutoTokenizer.from_pretrained(adapter_folder).save_pretrained(out_folder)


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))

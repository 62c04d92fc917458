"""The model runtime (`studio/llm`) on the tiny model: no Django involved."""

import dataclasses
import subprocess
import sys

import pytest
import torch

from benchmarks.processes import REPO
from studio.llm import GenerationSettings, ModelLoadError, PromptTooLongError, load_model, render_prompt_ids
from studio.llm.engine import BatchEngine, EngineRequest, prepare_prompt, reply_once
from studio.llm.loading import bundled_gguf_path, convert_gguf_once

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def engine(tiny_model):
    """The one path that decodes locally (the model worker's), on the tiny model."""
    engine = BatchEngine(tiny_model, max_batch=4)
    yield engine
    engine.close()


def reply(engine, messages, settings, **kwargs):
    pieces = []
    result = reply_once(engine, messages, settings, on_delta=pieces.append, **kwargs)
    return result, pieces


def test_the_runtime_imports_without_django_settings():
    check = (
        "import sys, studio.llm, studio.llm.tiny; "
        "assert not any(m == 'django' or m.startswith('django.') for m in sys.modules), 'django imported'"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_it_streams_text_in_pieces_that_add_up_to_the_reply(engine, tiny_model):
    result, pieces = reply(engine, HELLO, GenerationSettings(max_new_tokens=40, temperature=0))
    assert len(pieces) >= 2
    assert "".join(pieces) == result.text
    assert result.usage.completion_tokens == 40
    assert result.usage.prompt_tokens == len(render_prompt_ids(tiny_model, HELLO))
    assert result.usage.ttft_ms > 0 and result.usage.tokens_per_s > 0
    assert result.finish_reason == "length"


@pytest.mark.slow  # minutes of decoding: the whole suite's, not the edit loop's
def test_greedy_and_seeded_sampling_are_reproducible(engine):
    def text(settings):
        return reply(engine, HELLO, settings)[0].text

    greedy = GenerationSettings(max_new_tokens=30, temperature=0)
    assert text(greedy) == text(greedy)
    seeded = GenerationSettings(max_new_tokens=30, temperature=1.0, top_p=0.9, seed=7)
    assert text(seeded) == text(seeded)
    assert text(seeded) != text(GenerationSettings(max_new_tokens=30, temperature=1.0, top_p=0.9, seed=8))


def test_a_stop_sequence_ends_the_reply_before_it(engine):
    full = reply(engine, HELLO, GenerationSettings(max_new_tokens=60, temperature=0))[0].text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    cut = full[: full.index(stop)]
    result, pieces = reply(engine, HELLO, GenerationSettings(max_new_tokens=60, temperature=0, stop=(stop,)))
    assert "".join(pieces) == result.text == cut
    assert result.finish_reason == "stop"


def test_cancel_stops_generation_early(engine):
    key, seen = object(), []

    def on_delta(delta):
        seen.append(delta)
        if len(seen) == 5:
            engine.cancel(key)

    result = reply_once(
        engine, HELLO, GenerationSettings(max_new_tokens=5000, temperature=0), on_delta=on_delta, key=key
    )
    assert result.finish_reason == "cancelled"
    assert result.usage.completion_tokens < 100


def test_the_chat_template_puts_the_system_prompt_first(tiny_model):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]
    prompt = tiny_model.tokenizer.decode(render_prompt_ids(tiny_model, messages))
    assert prompt.index("You are terse.") < prompt.index("Hi")
    assert prompt.rstrip().endswith("<|im_start|>assistant")


def test_old_turns_are_dropped_to_fit_the_context(tiny_model):
    tiny_model = dataclasses.replace(tiny_model, context_length=2048)
    long_turns = []
    for n in range(40):
        long_turns += [
            {"role": "user", "content": f"question {n} " + "word " * 200},
            {"role": "assistant", "content": "answer " * 200},
        ]
    messages = [{"role": "system", "content": "Be kind."}, *long_turns, {"role": "user", "content": "last"}]
    from studio.llm.replies import fit_to_context

    kept, prompt_ids = fit_to_context(tiny_model, messages, 10)
    assert kept[0]["content"] == "Be kind."
    assert kept[-1]["content"] == "last"
    assert len(prompt_ids) <= tiny_model.context_length - 10
    assert len(kept) < len(messages)


def test_a_message_longer_than_the_context_is_refused_clearly(tiny_model):
    huge = [{"role": "user", "content": "word " * 40000}]
    with pytest.raises(PromptTooLongError, match="Shorten it"):
        prepare_prompt(
            tiny_model,
            EngineRequest(
                key=1, messages=huge, settings=GenerationSettings(max_new_tokens=10), on_delta=print, on_done=print
            ),
        )


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


@pytest.mark.slow
def test_the_bundled_gguf_is_converted_once_then_loaded_from_the_cache(tmp_path):
    cache = tmp_path / "models"
    folder = convert_gguf_once(bundled_gguf_path(), cache)
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".converting-")]

    converted_at = (folder / "model.safetensors").stat().st_mtime_ns
    loaded = load_model("smollm2", cache_dir=cache)
    # Loaded from the cache, not converted again (how fast is the bench's to say).
    assert (folder / "model.safetensors").stat().st_mtime_ns == converted_at
    assert loaded.name == "SmolLM2-135M-Instruct"
    engine = BatchEngine(loaded, max_batch=1)
    answer = reply_once(
        engine,
        [{"role": "user", "content": "What is the capital of France?"}],
        GenerationSettings(max_new_tokens=12, temperature=0),
    ).text
    engine.close()
    assert "Paris" in answer


def test_the_compute_dtype_follows_the_cpu_and_the_device():
    from studio.llm.loading import compute_dtype

    plain_cpu = "flags : fpu sse2 avx2 avx512f"
    assert compute_dtype("auto", "cpu", cpuinfo=plain_cpu) == "float32"  # bf16 emulated: many times slower
    assert compute_dtype("auto", "cpu", cpuinfo=plain_cpu + " avx512_bf16") == "bfloat16"
    assert compute_dtype("auto", "cpu", cpuinfo=plain_cpu + " amx_bf16 amx_tile") == "bfloat16"
    assert compute_dtype("auto", "cuda", cpuinfo=plain_cpu) == "bfloat16"
    assert compute_dtype("float32", "cuda") == "float32"

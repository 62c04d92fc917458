"""Continuous batching (studio.llm.engine) on the tiny model: replies decoded together equal the
same replies decoded alone, join and leave mid-batch, stop before their first token."""

import threading
import time

import pytest

from studio.llm import Generation, GenerationSettings, load_model
from studio.llm.engine import BatchEngine, EngineRequest
from tests.settings import TEST_CACHE, TINY_MODEL_DIR

PROMPTS = [f"Question {n}: {'tell me more ' * n}about the sea" for n in range(6)]


@pytest.fixture(scope="module")
def loaded():
    return load_model(str(TINY_MODEL_DIR), cache_dir=TEST_CACHE / "models", dtype="float32")


def run(engine, requests, *, stagger=0.0):
    results, finished = {}, threading.Event()

    def request(key, prompt, settings):
        def done(result):
            results[key] = result
            if len(results) == len(requests):
                finished.set()

        return EngineRequest(key=key, messages=[{"role": "user", "content": prompt}], settings=settings,
                             on_delta=lambda delta: None, on_done=done)

    for key, (prompt, settings) in enumerate(requests):
        engine.submit(request(key, prompt, settings))
        time.sleep(stagger)
    assert finished.wait(120)
    return [results[key] for key in range(len(requests))]


def test_replies_decoded_together_equal_each_decoded_alone(loaded):
    # Seeded sampling makes the tiny random model write varied tokens (greedy, it writes newlines).
    requests = [(prompt, GenerationSettings(max_new_tokens=24, temperature=1.0, seed=n)) for n, prompt in
                enumerate(PROMPTS)]
    alone_engine = BatchEngine(loaded, max_batch=1)
    alone = [run(alone_engine, [request])[0] for request in requests]
    alone_engine.close()
    together_engine = BatchEngine(loaded, max_batch=8)
    together = run(together_engine, requests, stagger=0.02)  # later ones join a running batch
    together_engine.close()
    assert [r.text for r in together] == [r.text for r in alone]
    assert len({r.text for r in alone}) > 1 and all(r.usage.completion_tokens == 24 for r in together)


def test_greedy_replies_equal_plain_generate(loaded):
    settings = GenerationSettings(max_new_tokens=16, temperature=0)
    expected = ["".join(Generation(loaded, [{"role": "user", "content": p}], settings)) for p in PROMPTS[:3]]
    engine = BatchEngine(loaded, max_batch=4)
    assert [r.text for r in run(engine, [(p, settings) for p in PROMPTS[:3]])] == expected
    engine.close()


def test_replies_of_different_lengths_leave_and_others_join_mid_batch(loaded):
    engine = BatchEngine(loaded, max_batch=3)
    lengths = [4, 30, 8, 20, 2, 12]
    results = run(engine, [(p, GenerationSettings(max_new_tokens=n, temperature=1.0, seed=1))
                           for p, n in zip(PROMPTS, lengths)], stagger=0.01)
    assert [r.usage.completion_tokens for r in results] == lengths
    assert all(r.finish_reason == "length" for r in results)
    assert engine.rows == [] and engine.cache is None  # everything left the batch
    engine.close()


def test_a_stop_before_the_first_token_is_honoured(loaded):
    engine = BatchEngine(loaded, max_batch=2)
    engine.cancel("early")  # the stop arrives before the reply reaches the engine
    finished = threading.Event()
    outcome = {}
    engine.submit(EngineRequest(key="early", messages=[{"role": "user", "content": "hi"}],
                                settings=GenerationSettings(max_new_tokens=50, temperature=0),
                                on_delta=lambda delta: outcome.setdefault("text", delta),
                                on_done=lambda r: (outcome.update(result=r), finished.set())))
    assert finished.wait(30)
    assert outcome["result"].finish_reason == "cancelled" and "text" not in outcome
    engine.close()


def test_streamed_text_is_the_whole_decoded_reply_multibyte_characters_included(loaded):
    """Text is decoded a few tokens at a time as it streams; nothing is cut short or doubled,
    including characters whose bytes span several tokens."""
    from studio.llm.engine import _Row

    text = "Héllo wörld 🚀🚀 — 你好, naïve café ☕ done"
    ids = loaded.tokenizer.encode(text, add_special_tokens=False)
    engine = BatchEngine(loaded, max_batch=1)
    row = _Row(request=None, prompt_ids=[], generator=None)
    streamed = ""
    for token in ids:
        row.completion.append(token)
        streamed += engine._decode_new(row)
    row.text = streamed
    engine.close()
    assert streamed + engine._tail(row) == loaded.tokenizer.decode(ids) == text
    assert len(ids) > len(text.split())  # several characters here take more than one token

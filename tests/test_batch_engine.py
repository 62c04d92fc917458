"""Continuous batching (studio.llm.engine) on the tiny model: replies decoded together equal the
same replies decoded alone, join and leave mid-batch, stop before their first token."""

import threading
import time

import pytest

from studio.llm import GenerationSettings, load_model
from studio.llm.engine import BatchEngine, EngineRequest
from tests.settings import TEST_CACHE, TINY_MODEL_DIR

PROMPTS = [f"Question {n}: {'tell me more ' * n}about the sea" for n in range(6)]


@pytest.fixture(scope="module")
def loaded():
    return load_model(str(TINY_MODEL_DIR), cache_dir=TEST_CACHE / "models", dtype="float32")


def run(engine, requests, *, stagger=0.0, background=False):
    results, finished = {}, threading.Event()

    def request(key, prompt, settings):
        def done(result):
            results[key] = result
            if len(results) == len(requests):
                finished.set()

        return EngineRequest(key=key, messages=[{"role": "user", "content": prompt}], settings=settings,
                             on_delta=lambda delta: None, on_done=done, background=background)

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
    import torch

    from studio.llm import render_prompt_ids

    settings = GenerationSettings(max_new_tokens=16, temperature=0)
    expected = []
    for prompt in PROMPTS[:3]:  # transformers' own `generate`, greedy, as the reference
        ids = torch.tensor([render_prompt_ids(loaded, [{"role": "user", "content": prompt}])])
        with torch.inference_mode():
            out = loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16,
                                        do_sample=False, temperature=None, top_p=None, top_k=None,
                                        pad_token_id=loaded.tokenizer.eos_token_id)
        expected.append(loaded.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
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
    assert engine.rows == [] and engine.foreground.cache is None  # everything left the batch
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


def test_background_replies_prefilled_together_equal_each_decoded_alone(loaded):
    """Evaluation cases are prefilled several at once (left-padded): the replies are the same."""
    requests = [(prompt, GenerationSettings(max_new_tokens=16, temperature=1.0, seed=n)) for n, prompt in
                enumerate(PROMPTS)]
    alone_engine = BatchEngine(loaded, max_batch=1)
    alone = [run(alone_engine, [request])[0] for request in requests]
    alone_engine.close()
    engine = BatchEngine(loaded, max_batch=8)
    together = run(engine, requests, background=True)
    engine.close()
    assert [r.text for r in together] == [r.text for r in alone]


def test_background_replies_wait_while_a_foreground_reply_is_written(loaded):
    """With no background share, evaluation cases make no progress while someone's reply is
    being written, and all finish after it."""
    engine = BatchEngine(loaded, max_batch=8, background_share=0.0)
    events, finished = [], threading.Event()
    lock = threading.Lock()

    def request(key, background, tokens):
        def delta(text):
            with lock:
                events.append(key)

        def done(result):
            with lock:
                events.append(f"{key} done")
                if sum(event.endswith("done") for event in events) == 4:
                    finished.set()

        return EngineRequest(key=key, messages=[{"role": "user", "content": PROMPTS[2]}], background=background,
                             settings=GenerationSettings(max_new_tokens=tokens, min_new_tokens=tokens, temperature=0),
                             on_delta=delta, on_done=done)

    engine.call(lambda: time.sleep(0.5))  # hold the loop so that all four arrive together
    engine.submit(request("chat", False, 40))
    for n in range(3):
        engine.submit(request(f"case{n}", True, 10))
    assert finished.wait(120)
    engine.close()
    chat_done = events.index("chat done")
    assert not any(event.startswith("case") for event in events[:chat_done])
    assert {"case0 done", "case1 done", "case2 done"} <= set(events[chat_done:])


def test_a_long_history_is_fitted_in_the_callers_thread_not_in_the_step_loop(loaded):
    """Preparing a prompt (fitting hundreds of turns to the context) happens before the request
    reaches the engine, once: the loop only ever sees token ids."""
    import dataclasses

    from studio.llm.engine import prepare_prompt

    small = dataclasses.replace(loaded, context_length=512)
    history = []
    for n in range(300):
        history += [{"role": "user", "content": f"q{n} " + "word " * 300}, {"role": "assistant", "content": "ok"}]
    history.append({"role": "user", "content": "last"})
    calls = []
    original = small.tokenizer.apply_chat_template

    def counting_template(*args, **kwargs):
        calls.append(threading.current_thread().name)
        return original(*args, **kwargs)

    request = EngineRequest(key=1, messages=history, settings=GenerationSettings(max_new_tokens=16),
                            on_delta=lambda d: None, on_done=lambda r: None)
    small.tokenizer.apply_chat_template = counting_template
    try:
        prepare_prompt(small, request)
    finally:
        del small.tokenizer.apply_chat_template
    assert len(request.prompt_ids) <= 512 - 16
    assert len(calls) <= 2  # rendered once (twice at most), not once per dropped turn
    assert "llm-batch-engine" not in calls

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

        return EngineRequest(
            key=key,
            messages=[{"role": "user", "content": prompt}],
            settings=settings,
            on_delta=lambda delta: None,
            on_done=done,
            background=background,
        )

    for key, (prompt, settings) in enumerate(requests):
        engine.submit(request(key, prompt, settings))
        time.sleep(stagger)
    assert finished.wait(120)
    return [results[key] for key in range(len(requests))]


def test_replies_decoded_together_equal_each_decoded_alone(loaded):
    # Seeded sampling makes the tiny random model write varied tokens (greedy, it writes newlines).
    requests = [
        (prompt, GenerationSettings(max_new_tokens=24, temperature=1.0, seed=n)) for n, prompt in enumerate(PROMPTS)
    ]
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
            out = loaded.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=16,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=loaded.tokenizer.eos_token_id,
            )
        expected.append(loaded.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    engine = BatchEngine(loaded, max_batch=4)
    assert [r.text for r in run(engine, [(p, settings) for p in PROMPTS[:3]])] == expected
    engine.close()


def test_replies_of_different_lengths_leave_and_others_join_mid_batch(loaded):
    engine = BatchEngine(loaded, max_batch=3)
    lengths = [4, 30, 8, 20, 2, 12]
    results = run(
        engine,
        [(p, GenerationSettings(max_new_tokens=n, temperature=1.0, seed=1)) for p, n in zip(PROMPTS, lengths)],
        stagger=0.01,
    )
    assert [r.usage.completion_tokens for r in results] == lengths
    assert all(r.finish_reason == "length" for r in results)
    assert engine.rows == [] and engine.foreground.cache is None  # everything left the batch
    engine.close()


def test_a_stop_before_the_first_token_is_honoured(loaded):
    engine = BatchEngine(loaded, max_batch=2)
    engine.cancel("early")  # the stop arrives before the reply reaches the engine
    finished = threading.Event()
    outcome = {}
    engine.submit(
        EngineRequest(
            key="early",
            messages=[{"role": "user", "content": "hi"}],
            settings=GenerationSettings(max_new_tokens=50, temperature=0),
            on_delta=lambda delta: outcome.setdefault("text", delta),
            on_done=lambda r: (outcome.update(result=r), finished.set()),
        )
    )
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
    requests = [
        (prompt, GenerationSettings(max_new_tokens=16, temperature=1.0, seed=n)) for n, prompt in enumerate(PROMPTS)
    ]
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

        return EngineRequest(
            key=key,
            messages=[{"role": "user", "content": PROMPTS[2]}],
            background=background,
            settings=GenerationSettings(max_new_tokens=tokens, min_new_tokens=tokens, temperature=0),
            on_delta=delta,
            on_done=done,
        )

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

    request = EngineRequest(
        key=1,
        messages=history,
        settings=GenerationSettings(max_new_tokens=16),
        on_delta=lambda d: None,
        on_done=lambda r: None,
    )
    small.tokenizer.apply_chat_template = counting_template
    try:
        prepare_prompt(small, request)
    finally:
        del small.tokenizer.apply_chat_template
    assert len(request.prompt_ids) <= 512 - 16
    assert len(calls) <= 2  # rendered once (twice at most), not once per dropped turn
    assert "llm-batch-engine" not in calls


# --- long prompts: prefilled in chunks between decode steps ---------------------------------

LONG_PROMPTS = [" ".join(f"line {n}: the tide comes in over the sand." for n in range(lines)) for lines in (9, 25, 31)]
CHUNK = 16  # tokens per chunk here; the long prompts are 130 to 420 tokens, so many chunks each


class RecordingModel:
    """The tiny model, recording the (B, T) shape of the input of each forward pass (and taking at
    least `seconds_per_token` per token of it, as a big model on a small machine would)."""

    def __init__(self, model, seconds_per_token=0.0):
        self.model, self.shapes, self.seconds_per_token = model, [], seconds_per_token

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, **kwargs):
        self.shapes.append(tuple(kwargs["input_ids"].shape))
        time.sleep(self.seconds_per_token * kwargs["input_ids"].shape[1])
        return self.model(**kwargs)


def recorded(loaded, seconds_per_token=0.0):
    import dataclasses

    return dataclasses.replace(loaded, model=RecordingModel(loaded.model, seconds_per_token))


def long_request(key, prompt, settings, *, done, on_delta=lambda delta: None, on_progress=lambda: None):
    return EngineRequest(
        key=key,
        messages=[{"role": "user", "content": prompt}],
        settings=settings,
        on_delta=on_delta,
        on_done=done,
        on_progress=on_progress,
    )


@pytest.fixture(scope="module")
def sharp(loaded):
    """The tiny model with sharp attention: randomly initialised, its attention is near uniform and
    barely sees where a token is, so a wrong position or mask would go unnoticed; scaled queries
    and keys make every reply depend on them."""
    import copy
    import dataclasses

    import torch

    model = copy.deepcopy(loaded.model)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(30)
            layer.self_attn.k_proj.weight.mul_(30)
    return dataclasses.replace(loaded, model=model)


def test_a_long_prompt_prefilled_in_chunks_gets_the_reply_of_a_whole_prefill(sharp):
    """Greedy and seeded replies to prompts many chunks long equal those of one whole prefill
    (float32), alone and when the prompt joins a lane where another reply is being written."""
    loaded = sharp
    requests = [
        (prompt, GenerationSettings(max_new_tokens=20, temperature=temperature, seed=n))
        for n, prompt in enumerate(LONG_PROMPTS)
        for temperature in (0, 1.0)
    ]
    whole_engine = BatchEngine(loaded, max_batch=1, prefill_chunk_tokens=100_000)
    whole = [run(whole_engine, [request])[0] for request in requests]
    whole_engine.close()
    chunked_model = recorded(loaded)
    chunked_engine = BatchEngine(chunked_model, max_batch=1, prefill_chunk_tokens=CHUNK)
    chunked = [run(chunked_engine, [request])[0] for request in requests]
    chunked_engine.close()
    assert [r.text for r in chunked] == [r.text for r in whole]
    assert len({r.text for r in whole}) > 3  # the replies differ from one another, greedy ones too
    assert max(t for _, t in chunked_model.model.shapes) == CHUNK  # no forward pass took more
    beside_engine = BatchEngine(loaded, max_batch=8, prefill_chunk_tokens=CHUNK)
    beside = run(
        beside_engine,
        [(PROMPTS[1], GenerationSettings(max_new_tokens=60, temperature=1.0, seed=9))] + requests,
        stagger=0.02,
    )
    beside_engine.close()
    assert [r.text for r in beside[1:]] == [r.text for r in whole]


def test_a_running_reply_gets_a_token_between_every_two_chunks_of_a_long_prompt(loaded):
    """A long prompt's prefill never holds a reply that is being written: every chunk is
    followed by a decode step of the lane, and the long prompt says it is moving after each."""
    model = recorded(loaded)
    engine = BatchEngine(model, max_batch=4, prefill_chunk_tokens=CHUNK, prefill_share=1_000.0)  # a chunk a step
    finished, results, progress = threading.Event(), {}, []
    written = threading.Event()

    def done(key):
        return lambda result: (results.__setitem__(key, result), len(results) == 2 and finished.set())

    engine.submit(
        long_request(
            "running",
            PROMPTS[0],
            GenerationSettings(max_new_tokens=400, min_new_tokens=400, temperature=0),
            done=done("running"),
            on_delta=lambda delta: written.set(),
        )
    )
    assert written.wait(60)
    prompt_tokens = len(
        engine.loaded.tokenizer.apply_chat_template(
            [{"role": "user", "content": LONG_PROMPTS[2]}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
    )
    engine.submit(
        long_request(
            "long",
            LONG_PROMPTS[2],
            GenerationSettings(max_new_tokens=4, temperature=0),
            done=done("long"),
            on_progress=lambda: progress.append(len(engine.rows[0].completion)),
        )
    )
    assert finished.wait(120)
    engine.close()
    assert len(progress) == -(-prompt_tokens // CHUNK) > 20  # one call per chunk
    assert all(later > earlier for earlier, later in zip(progress, progress[1:])), progress
    assert max(tokens for _, tokens in model.model.shapes) == CHUNK
    assert results["long"].finish_reason == "length" and results["running"].usage.completion_tokens == 400


def test_a_long_prompt_yields_to_the_replies_being_written_within_its_share(loaded):
    """With no prefill share (and no burst), a long prompt waits while another reply is being
    written and is prefilled once it is done: chunks take time from those replies only within
    the share."""
    engine = BatchEngine(loaded, max_batch=4, prefill_chunk_tokens=CHUNK, prefill_share=0.0, prefill_burst_s=0.0)
    finished, events = threading.Event(), []
    written = threading.Event()

    def done(key):
        return lambda result: (events.append(f"{key} done"), key == "long" and finished.set())

    engine.submit(
        long_request(
            "running",
            PROMPTS[0],
            GenerationSettings(max_new_tokens=60, min_new_tokens=60, temperature=0),
            done=done("running"),
            on_delta=lambda delta: written.set(),
        )
    )
    assert written.wait(60)
    engine.submit(
        long_request(
            "long",
            LONG_PROMPTS[1],
            GenerationSettings(max_new_tokens=4, temperature=0),
            done=done("long"),
            on_progress=lambda: events.append("chunk"),
        )
    )
    assert finished.wait(120)
    engine.close()
    assert events[0] == "running done" and events.count("chunk") > 10


def test_a_prompt_of_a_few_chunks_is_prefilled_at_once_within_the_burst(loaded):
    """The share's first burst lets a prompt of a few chunks (a chat with retrieved passages) in
    without waiting for the replies being written, even with no share after it."""
    engine = BatchEngine(loaded, max_batch=4, prefill_chunk_tokens=CHUNK, prefill_share=0.0, prefill_burst_s=60.0)
    finished, events, written = threading.Event(), [], threading.Event()

    def done(key):
        return lambda result: (
            events.append(f"{key} done"),
            "running done" in events and "long done" in events and finished.set(),
        )

    engine.submit(
        long_request(
            "running",
            PROMPTS[0],
            GenerationSettings(max_new_tokens=200, min_new_tokens=200, temperature=0),
            done=done("running"),
            on_delta=lambda delta: written.set(),
        )
    )
    assert written.wait(60)
    engine.submit(
        long_request(
            "long",
            LONG_PROMPTS[0],
            GenerationSettings(max_new_tokens=4, temperature=0),
            done=done("long"),
            on_progress=lambda: events.append("chunk"),
        )
    )
    assert finished.wait(120)
    engine.close()
    assert events.index("long done") < events.index("running done") and events.count("chunk") > 5


def test_chunks_that_take_long_are_cut_smaller_while_others_replies_are_being_written(loaded):
    """A chunk of a long prompt costs more the longer its prefix (and far more on a slow machine):
    while another reply is being written, chunks are cut to what fits in half a second; with
    nobody's reply waiting, they keep their full size."""
    from studio.llm.engine import PREFILL_CHUNK_S

    model = recorded(loaded, seconds_per_token=0.01)  # 128 tokens take 1.3 s at least
    engine = BatchEngine(model, max_batch=4, prefill_chunk_tokens=128, prefill_share=1_000.0)
    finished, written = threading.Event(), threading.Event()
    run(engine, [(LONG_PROMPTS[2], GenerationSettings(max_new_tokens=2, temperature=0))])  # alone
    alone_chunks = [tokens for _, tokens in model.model.shapes if tokens > 1]
    model.model.shapes.clear()
    engine.submit(
        long_request(
            "running",
            PROMPTS[0],
            GenerationSettings(max_new_tokens=2000, temperature=0, min_new_tokens=2000),
            done=lambda result: None,
            on_delta=lambda delta: written.set(),
        )
    )
    assert written.wait(60)
    engine.submit(
        long_request(
            "long",
            LONG_PROMPTS[2],
            GenerationSettings(max_new_tokens=2, temperature=0),
            done=lambda result: finished.set(),
        )
    )
    assert finished.wait(120)
    engine.cancel("running")
    engine.close()
    beside_chunks = [tokens for _, tokens in model.model.shapes if tokens > 1][1:]  # after the running prompt
    assert alone_chunks[:-1] == [128] * (len(alone_chunks) - 1)
    assert beside_chunks[0] == 128 and len(beside_chunks) > len(alone_chunks)
    assert all(tokens <= 2 * PREFILL_CHUNK_S / 0.01 for tokens in beside_chunks[1:]), beside_chunks


def test_short_prompts_arriving_together_are_prefilled_one_step_budget_at_a_time(loaded):
    """Prompts within one chunk are prefilled whole, but no more of their tokens between two
    decode steps than a chunk holds (the first always): many arrivals never hold a reply long."""
    model = recorded(loaded)
    engine = BatchEngine(model, max_batch=8, prefill_chunk_tokens=64)  # one of PROMPTS[:3] fits, two do not
    finished, results, written, gate = threading.Event(), {}, threading.Event(), threading.Event()

    def done(key):
        return lambda result: (results.__setitem__(key, result), len(results) == 4 and finished.set())

    engine.submit(
        long_request(
            "running",
            PROMPTS[0],
            GenerationSettings(max_new_tokens=40, min_new_tokens=40, temperature=0),
            done=done("running"),
            on_delta=lambda delta: written.set(),
        )
    )
    assert written.wait(60)
    engine.call(lambda: gate.wait(30))  # hold the loop so that the three arrive together
    for n in range(3):
        engine.submit(long_request(n, PROMPTS[n], GenerationSettings(max_new_tokens=8, temperature=0), done=done(n)))
    gate.set()
    assert finished.wait(120)
    engine.close()
    prefills = [n for n, (_, tokens) in enumerate(model.model.shapes) if tokens > 1]
    assert len(prefills) == 4 and all(b - a > 1 for a, b in zip(prefills, prefills[1:]))  # a step between any two
    assert all(tokens <= 64 for _, tokens in model.model.shapes)


def test_a_reply_stopped_while_its_long_prompt_is_prefilled_ends_cancelled_and_frees_its_place(loaded):
    engine = BatchEngine(loaded, max_batch=1, prefill_chunk_tokens=CHUNK)
    finished, outcome, chunks = threading.Event(), {}, []

    def progress():
        chunks.append(1)
        if len(chunks) == 2:
            engine.cancel("long")  # stopped after its second chunk, long before its prompt is in

    engine.submit(
        long_request(
            "long",
            LONG_PROMPTS[2],
            GenerationSettings(max_new_tokens=50, temperature=0),
            done=lambda r: (outcome.update(result=r), finished.set()),
            on_progress=progress,
        )
    )
    assert finished.wait(60)
    assert outcome["result"].finish_reason == "cancelled" and outcome["result"].text == ""
    assert len(chunks) == 2 and engine.rows == []
    after = run(engine, [(PROMPTS[0], GenerationSettings(max_new_tokens=5, temperature=0))])  # its place is free
    engine.close()
    assert after[0].usage.completion_tokens == 5

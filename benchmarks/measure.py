"""Measurements for `manage.py bench`: raw `model.generate` against the full path.

Raw: the loaded model's `generate` in this process, a streamer timing each token. Full
path: a real daphne server (and, in Redis mode, an `llm_worker` process) started through
`benchmarks.processes`, a real WebSocket client timing the frames it receives.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch
from transformers.generation.streamers import BaseStreamer

from studio.llm import LoadedModel, render_prompt_ids

from .processes import open_chat_socket


class OtherLoad:
    """How much CPU the rest of the machine took while the block ran, in cores (Linux only).

    The bench shares a small machine: another program's work slows generation and makes
    a run meaningless, so each run reports it. Ours = this process and `pids` (the
    studio's server and workers).
    """

    def __init__(self, pids=()):
        self.pids = [os.getpid(), *pids]
        self.cores: float | None = None

    def __enter__(self):
        self.started = self._sample()
        return self

    def __exit__(self, *exc):
        ended = self._sample()
        if self.started and ended:
            wall = ended[0] - self.started[0]
            other = (ended[1] - self.started[1]) - (ended[2] - self.started[2])
            self.cores = max(0.0, other / wall) if wall > 0 else None

    def _sample(self):
        try:
            tick = os.sysconf("SC_CLK_TCK")
            fields = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
            busy = sum(fields[i] for i in (0, 1, 2, 5, 6, 7)) / tick  # user nice system irq softirq steal
            ours = 0.0
            for pid in self.pids:
                try:
                    stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                    ours += (int(stat[11]) + int(stat[12])) / tick  # utime, stime (all threads)
                except OSError:
                    pass
            return time.perf_counter(), busy, ours
        except (OSError, ValueError, AttributeError):
            return None


def decode_speed(count: int, first_at: float, last_at: float) -> float | None:
    """Tokens per second after the first token (the definition `Usage.tokens_per_s` uses)."""
    return (count - 1) / (last_at - first_at) if count > 1 and last_at > first_at else None


def median_of(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in ("tokens_per_s", "ttft_ms")}


class _TimingStreamer(BaseStreamer):
    def __init__(self):
        self.token_times: list[float] = []
        self.prompt_seen = False

    def put(self, value):
        if not self.prompt_seen:  # generate() first puts the prompt
            self.prompt_seen = True
            return
        self.token_times.extend([time.perf_counter()] * value.numel())

    def end(self):
        pass


def raw_run(loaded: LoadedModel, prompt_ids: list[int], tokens: int) -> dict:
    """One greedy, fixed-length `model.generate` call, timed by a streamer."""
    device = loaded.model.device
    tokenizer = loaded.tokenizer
    streamer = _TimingStreamer()
    kwargs = dict(
        input_ids=torch.tensor([prompt_ids], device=device),
        attention_mask=torch.ones((1, len(prompt_ids)), dtype=torch.long, device=device),
        max_new_tokens=tokens,
        min_new_tokens=tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        streamer=streamer,
    )
    with torch.inference_mode(), OtherLoad() as other:
        started = time.perf_counter()
        loaded.model.generate(**kwargs)
    times = streamer.token_times
    return {
        "completion_tokens": len(times),
        "ttft_ms": (times[0] - started) * 1000,
        "tokens_per_s": decode_speed(len(times), times[0], times[-1]),
        "other_load": other.cores,
    }


async def wait_for_ready_worker(sqlite_path, *, timeout: float = 300) -> None:
    """Until a model worker has loaded the model (its row in the studio's SQLite says so)."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(sqlite_path, timeout=5) as db:
                states = [row[0] for row in db.execute("SELECT state FROM chat_modelworker")]
        except sqlite3.Error:
            states = []
        if "ready" in states:
            return
        if "failed" in states:
            raise RuntimeError("the model worker could not load the model (see its log)")
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no model worker was ready after {timeout:.0f} s")


async def open_fresh_conversation(server, session):
    """A new conversation and a WebSocket on it, ready to send."""
    conversation_id = await asyncio.to_thread(session.new_conversation)
    return await open_chat_socket(server, session, conversation_id)


async def timed_reply(socket, prompt: str, *, timeout: float = 300) -> dict:
    """Send `prompt`; time the frames as the client sees them, up to the done frame."""
    sent_at = time.perf_counter()
    await socket.send(json.dumps({"type": "send", "content": prompt}))
    token_times: list[float] = []
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), timeout))
        received_at = time.perf_counter()
        if frame["type"] == "token":
            token_times.append(received_at)
        elif frame["type"] == "done":
            break
        elif frame["type"] == "error":
            raise RuntimeError(f"the server answered with an error: {frame['error']}")
    if frame["status"] != "complete" or not token_times:
        raise RuntimeError(
            f"the reply ended {frame['status']} with {len(token_times)} token frames: {frame.get('error', '')}"
        )
    usage = frame["usage"]
    count = usage["completion_tokens"]  # token frames carry chunks of several tokens
    return {
        "completion_tokens": count,
        "ttft_ms": (token_times[0] - sent_at) * 1000,
        "tokens_per_s": decode_speed(count, token_times[0], token_times[-1]),
        "token_frames": len(token_times),
        "worker_ttft_ms": usage["ttft_ms"],
        "worker_tokens_per_s": usage["tokens_per_s"],
        "sent_at": sent_at,
        "done_at": received_at,
    }


async def single_reply(server, session, prompt: str, *, timeout: float = 300) -> dict:
    socket = await open_fresh_conversation(server, session)
    try:
        with OtherLoad(server_pids(server)) as other:
            reply = await timed_reply(socket, prompt, timeout=timeout)
    finally:
        await socket.close()
    return {**reply, "other_load": other.cores}


def server_pids(server) -> list[int]:
    """The studio's processes: server, model workers, and what they started (job worker, render processes)."""
    pids = [server.server.pid, *(worker.pid for worker in server.workers)]
    for pid in list(pids):
        pids += _descendants(pid)
    return pids


def _descendants(pid: int) -> list[int]:
    import subprocess

    children = [
        int(child) for child in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    ]
    return children + [grandchild for child in children for grandchild in _descendants(child)]


async def aggregate(server, session, prompt: str, conversations: int) -> dict:
    """`conversations` replies requested at once: total completion tokens / wall time."""
    sockets = [await open_fresh_conversation(server, session) for _ in range(conversations)]
    try:
        with OtherLoad(server_pids(server)) as other:
            replies = await asyncio.gather(*(timed_reply(s, prompt, timeout=900) for s in sockets))
    finally:
        for socket in sockets:
            await socket.close()
    wall_s = max(r["done_at"] for r in replies) - min(r["sent_at"] for r in replies)
    total = sum(r["completion_tokens"] for r in replies)
    ttfts = sorted(round(r["ttft_ms"], 1) for r in replies)
    return {
        "conversations": conversations,
        "completion_tokens": total,
        "wall_s": wall_s,
        "tokens_per_s": total / wall_s,
        "ttft_ms": ttfts,
        "ttft_p50_ms": percentile(ttfts, 50),
        "ttft_p95_ms": percentile(ttfts, 95),
        "other_load": other.cores,
    }


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p95 of 8 values is the largest; of 16, the 16th)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def engine_runs(model: str, cache_dir: str, dtype: str, prompt: str, tokens: int, counts: list[int]) -> list[dict]:
    from studio.llm import load_model

    loaded = load_model(model, cache_dir=Path(cache_dir), device="cpu", quantization="none", dtype=dtype)
    engine_aggregate(loaded, prompt, tokens, 1)  # warm-up
    return [engine_aggregate(loaded, prompt, tokens, count) for count in counts]


def engine_runs_in_subprocess(model, cache_dir, dtype, prompt, tokens, counts) -> list[dict]:
    import subprocess
    import sys

    from .processes import REPO

    code = (
        "import json, sys; from benchmarks.measure import engine_runs; "
        "print('RESULT ' + json.dumps(engine_runs(*json.loads(sys.argv[1]))))"
    )
    args = json.dumps([str(model), str(cache_dir), dtype, prompt, tokens, counts])
    done = subprocess.run(
        [sys.executable, "-c", code, args], cwd=REPO, capture_output=True, text=True, check=True, timeout=3600
    )
    return json.loads(done.stdout.split("RESULT ", 1)[1])


def engine_aggregate(loaded: LoadedModel, prompt_ids_text: str, tokens: int, replies: int) -> dict:
    """`replies` greedy fixed-length replies submitted together to one BatchEngine (the worker's
    decoder, without the web path): total completion tokens / wall time."""
    import threading

    from studio.llm.engine import BatchEngine, EngineRequest
    from studio.llm.replies import GenerationSettings

    engine = BatchEngine(loaded, max_batch=max(replies, 1))
    done = threading.Event()
    results = []

    def finished(result):
        results.append(result)
        if len(results) == replies:
            done.set()

    settings = GenerationSettings(max_new_tokens=tokens, min_new_tokens=tokens, temperature=0.0)
    try:
        with OtherLoad() as other:
            started = time.perf_counter()
            for n in range(replies):
                engine.submit(
                    EngineRequest(
                        key=n,
                        messages=[{"role": "user", "content": prompt_ids_text}],
                        settings=settings,
                        on_delta=lambda delta: None,
                        on_done=finished,
                    )
                )
            done.wait(1800)
            wall_s = time.perf_counter() - started
    finally:
        engine.close()
    total = sum(r.usage.completion_tokens for r in results)
    return {
        "replies": replies,
        "completion_tokens": total,
        "wall_s": wall_s,
        "tokens_per_s": total / wall_s,
        "other_load": other.cores,
    }


# --- constrained decoding against free decoding ------------------------------------------------

TICKET_SCHEMA = {  # what a support team extracts from a message: enums, a nested object, arrays
    "type": "object",
    "properties": {
        "intent": {"enum": ["refund", "exchange", "delivery", "billing", "question", "complaint"]},
        "priority": {"enum": ["low", "normal", "high", "urgent"]},
        "customer": {
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": 40}, "returning": {"type": "boolean"}},
            "required": ["name", "returning"],
            "additionalProperties": False,
        },
        "items": {
            "type": "array",
            "maxItems": 5,
            "items": {
                "type": "object",
                "properties": {
                    "product": {"type": "string", "maxLength": 40},
                    "quantity": {"type": "integer", "minimum": 1},
                },
                "required": ["product", "quantity"],
                "additionalProperties": False,
            },
        },
        "summary": {"type": "string", "maxLength": 300},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 6},
    },
    "required": ["intent", "priority", "customer", "items", "summary", "tags"],
    "additionalProperties": False,
}
TICKET_INSTRUCTIONS = "Extract the support ticket from the customer's message as JSON."
TICKET_MESSAGES = [
    "Hi, I'm Dana Price. The blender I ordered last week (2 of them) arrived cracked. I want my money back.",
    "This is Omar. My parcel with the hiking boots is ten days late and tracking shows nothing. Please help!",
    "Hello, Mei Lin here, a customer for years. Can I swap the blue scarf for a red one?",
    "Why was I charged twice for one lamp? Refund the second charge today. - Tom Becker",
    "Good morning, it's Sara. Do your kettles work with 110 V? I'd buy three.",
    "I am Paul Girard and this is my third complaint about the rude courier. The rug is fine though.",
    "Priya here: the invoice for order 5521 shows the wrong address and the wrong VAT number.",
    "Hey, Jonas. Two mugs and a teapot arrived, but the teapot lid is missing. Send one, please.",
]


def constrained_runs(model: str, cache_dir: str, dtype: str, tokens: int, runs: int) -> dict:
    """8 replies at once under TICKET_SCHEMA, then 8 free replies of exactly the lengths the
    constrained ones had (same prompts, same batch shape, greedy), `runs` rounds; and the time to
    compile the schema against the model's tokenizer, the first time and for a later reply (each
    reply compiles its own matcher)."""
    from studio.llm import GenerationSettings, load_model
    from studio.llm.constraints import compile_format

    loaded = load_model(model, cache_dir=Path(cache_dir), device="cpu", quantization="none", dtype=dtype)
    output_format = {"type": "json_schema", "schema": TICKET_SCHEMA}
    compile_format(loaded.tokenizer, {"type": "json"})  # the tokenizer's conversion, once a process
    started = time.perf_counter()
    compile_format(loaded.tokenizer, output_format)
    compile_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    compile_format(loaded.tokenizer, output_format)
    later_ms = (time.perf_counter() - started) * 1000
    messages = [
        [{"role": "system", "content": TICKET_INSTRUCTIONS}, {"role": "user", "content": text}]
        for text in TICKET_MESSAGES
    ]
    constrained_settings = GenerationSettings(max_new_tokens=tokens, temperature=0.0)
    engine_batch(loaded, messages, [constrained_settings] * len(messages), output_format)  # warm-up
    rounds = []
    for _ in range(runs):
        constrained = engine_batch(loaded, messages, [constrained_settings] * len(messages), output_format)
        lengths = [result.usage.completion_tokens for result in constrained["results"]]
        free = engine_batch(
            loaded,
            messages,
            [GenerationSettings(max_new_tokens=n, min_new_tokens=n, temperature=0.0) for n in lengths],
            None,
        )
        valid = sum(_valid_ticket(result.text) for result in constrained["results"])
        rounds.append(
            {
                "lengths": lengths,
                "valid": valid,
                "constrained_tokens_per_s": sum(lengths) / constrained["wall_s"],
                "free_tokens_per_s": sum(r.usage.completion_tokens for r in free["results"]) / free["wall_s"],
                "other_load": max(constrained["other_load"] or 0, free["other_load"] or 0),
            }
        )
        rounds[-1]["ratio"] = rounds[-1]["constrained_tokens_per_s"] / rounds[-1]["free_tokens_per_s"]
    return {
        "compile_ms": compile_ms,
        "later_ms": later_ms,
        "rounds": rounds,
        "replies": len(messages),
        "ratio": statistics.median(r["ratio"] for r in rounds),
    }


def _valid_ticket(text: str) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), TICKET_SCHEMA)
        return True
    except (ValueError, jsonschema.ValidationError):
        return False


def engine_batch(loaded: LoadedModel, messages: list[list[dict]], settings: list, output_format, tools=None) -> dict:
    """Every reply submitted at once to one BatchEngine (each under `output_format`, with `tools`);
    their results in order and the wall time."""
    import threading

    from studio.llm.engine import BatchEngine, EngineRequest

    engine = BatchEngine(loaded, max_batch=len(messages))
    results, done = [None] * len(messages), threading.Event()

    def finished(index, result):
        results[index] = result
        if all(r is not None for r in results):
            done.set()

    try:
        with OtherLoad() as other:
            started = time.perf_counter()
            for index, (turns, reply_settings) in enumerate(zip(messages, settings)):
                engine.submit(
                    EngineRequest(
                        key=index,
                        messages=turns,
                        settings=reply_settings,
                        output_format=output_format,
                        tools=tools,
                        on_delta=lambda delta: None,
                        on_done=lambda result, index=index: finished(index, result),
                    )
                )
            done.wait(1800)
            wall_s = time.perf_counter() - started
    finally:
        engine.close()
    return {"results": results, "wall_s": wall_s, "other_load": other.cores}


def constrained_runs_in_subprocess(model, cache_dir, dtype, tokens, runs, *, measure: str = "constrained_runs") -> dict:
    """In a process of its own, decoding only in the engine's thread, as in a model worker
    (`measure`: constrained_runs, or tool_call_runs)."""
    import subprocess
    import sys

    from .processes import REPO

    code = (
        f"import json, sys; from benchmarks.measure import {measure}; "
        f"print('RESULT ' + json.dumps({measure}(*json.loads(sys.argv[1]))))"
    )
    args = json.dumps([str(model), str(cache_dir), dtype, tokens, runs])
    done = subprocess.run(
        [sys.executable, "-c", code, args], cwd=REPO, capture_output=True, text=True, check=True, timeout=3600
    )
    return json.loads(done.stdout.split("RESULT ", 1)[1])


# --- tool calls against free decoding -----------------------------------------------------------

TICKET_TOOLS = [  # what a support agent's model may call: the ticket above, and two small lookups
    {
        "type": "function",
        "function": {"name": "create_ticket", "description": "File a support ticket", "parameters": TICKET_SCHEMA},
    },
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "An order's status by its number",
            "parameters": {
                "type": "object",
                "properties": {
                    "order": {"type": "string", "maxLength": 12},
                    "customer": {"type": "string", "maxLength": 40},
                },
                "required": ["order", "customer"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "refund",
            "parameters": {
                "type": "object",
                "properties": {
                    "order": {"type": "string", "maxLength": 12},
                    "amount": {"type": "number", "minimum": 0},
                },
                "required": ["order", "amount"],
                "additionalProperties": False,
            },
        },
    },
]


def tool_call_runs(model: str, cache_dir: str, dtype: str, tokens: int, runs: int) -> dict:
    """8 replies at once that must call one of TICKET_TOOLS (`tool_choice: "required"`, each call held
    to its tool's schema), then 8 free replies of exactly the lengths the calls had, reading the same
    prompts (the tools shown, `tool_choice: "none"`), greedy, `runs` rounds."""
    from studio.llm import GenerationSettings, load_model
    from studio.llm.tools import clean_tool_use, read_reply

    loaded = load_model(model, cache_dir=Path(cache_dir), device="cpu", quantization="none", dtype=dtype)
    calling = clean_tool_use(TICKET_TOOLS, "required", False)
    shown = clean_tool_use(TICKET_TOOLS, "none", False)
    messages = [[{"role": "user", "content": text}] for text in TICKET_MESSAGES]
    settings = GenerationSettings(max_new_tokens=tokens, temperature=0.0)
    engine_batch(loaded, messages, [settings] * len(messages), None, calling)  # warm-up
    schemas = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TICKET_TOOLS}
    rounds = []
    for _ in range(runs):
        called = engine_batch(loaded, messages, [settings] * len(messages), None, calling)
        lengths = [result.usage.completion_tokens for result in called["results"]]
        free = engine_batch(
            loaded,
            messages,
            [GenerationSettings(max_new_tokens=n, min_new_tokens=n, temperature=0.0) for n in lengths],
            None,
            shown,
        )
        valid = sum(_valid_calls(read_reply(result.text)[1], schemas) for result in called["results"])
        rounds.append(
            {
                "lengths": lengths,
                "valid": valid,
                "tool_call_tokens_per_s": sum(lengths) / called["wall_s"],
                "free_tokens_per_s": sum(r.usage.completion_tokens for r in free["results"]) / free["wall_s"],
                "other_load": max(called["other_load"] or 0, free["other_load"] or 0),
            }
        )
        rounds[-1]["ratio"] = rounds[-1]["tool_call_tokens_per_s"] / rounds[-1]["free_tokens_per_s"]
    return {"rounds": rounds, "replies": len(messages), "ratio": statistics.median(r["ratio"] for r in rounds)}


def _valid_calls(calls: list[dict], schemas: dict) -> bool:
    import jsonschema

    try:
        for call in calls:
            jsonschema.validate(json.loads(call["function"]["arguments"]), schemas[call["function"]["name"]])
    except (ValueError, jsonschema.ValidationError):
        return False
    return bool(calls)


# --- a reply being written while a long prompt is prefilled -------------------------------------

LONG_PREFILL_SENTENCE = (
    "Log entry {n}: at {hour:02d}:{minute:02d} the keeper of light {n} noted wind from the "
    "{wind}, a tide of {tide} metres and {ships} ships passing the {side} reef."
)
LONG_PREFILL_WARM_TOKENS = 16  # the running reply's tokens before the long prompt arrives


def long_prompt_messages(loaded: LoadedModel, tokens: int) -> list[dict]:
    """One user message (a pasted log, every line different) whose prompt is about `tokens` tokens."""
    winds, sides = ["north", "east", "south", "west"], ["outer", "inner", "northern", "southern"]
    lines = []
    for n in range(tokens):  # far more lines than needed; cut below
        lines.append(
            LONG_PREFILL_SENTENCE.format(
                n=n,
                hour=n % 24,
                minute=(7 * n) % 60,
                wind=winds[n % 4],
                tide=n % 9,
                ships=n % 13,
                side=sides[(n // 4) % 4],
            )
        )
    overhead = len(render_prompt_ids(loaded, [{"role": "user", "content": ""}]))
    ids = loaded.tokenizer.encode("\n".join(lines), add_special_tokens=False)[: max(tokens - overhead, 1)]
    text = loaded.tokenizer.decode(ids)
    return [{"role": "user", "content": text}]


def _streamed(engine, key, messages, settings):
    """Submit a reply; the time of each piece of its text as it arrives, and its result."""
    from concurrent.futures import Future

    from studio.llm.engine import EngineRequest

    times, done = [], Future()
    engine.submit(
        EngineRequest(
            key=key,
            messages=messages,
            settings=settings,
            on_done=done.set_result,
            on_delta=lambda delta: times.append(time.perf_counter()),
        )
    )
    return times, done


def _until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing came in {timeout:.0f} s")
        time.sleep(0.005)


def long_prefill_runs(model: str, cache_dir: str, dtype: str, prompt: str, prompt_tokens: int) -> dict:
    """A greedy reply is being written when a `prompt_tokens`-token prompt arrives in the same
    batch engine: its speed while that prompt is prefilled (from the prompt's arrival to its first
    token) against the same reply alone over the same tokens, and the longest wait between two of
    its pieces of text (one per token here) meanwhile."""
    from studio.llm import GenerationSettings, load_model
    from studio.llm.engine import BatchEngine

    loaded = load_model(model, cache_dir=Path(cache_dir), device="cpu", quantization="none", dtype=dtype)
    running = [{"role": "user", "content": prompt}]
    long_messages = long_prompt_messages(loaded, prompt_tokens)
    longest = loaded.context_length - len(render_prompt_ids(loaded, running)) - 8
    engine = BatchEngine(loaded, max_batch=8)
    try:
        _streamed(engine, "warm-up", running, GenerationSettings(max_new_tokens=8, temperature=0))[1].result(600)
        # Beside the long prompt: the reply runs until the long prompt's first token, then stops.
        times, running_done = _streamed(
            engine,
            "running",
            running,
            GenerationSettings(max_new_tokens=longest, min_new_tokens=longest, temperature=0),
        )
        _until(lambda: len(times) >= LONG_PREFILL_WARM_TOKENS, 600)
        with OtherLoad() as other:
            long_times, long_done = _streamed(
                engine, "long", long_messages, GenerationSettings(max_new_tokens=4, min_new_tokens=4, temperature=0)
            )
            arrived = time.perf_counter()
            _until(lambda: long_times or long_done.done() or running_done.done(), 3600)
            first_token = long_times[0] if long_times else time.perf_counter()
        engine.cancel("running")
        running_result = running_done.result(600)
        long_result = long_done.result(3600)
        before = sum(1 for t in times if t <= arrived)
        during = [t for t in times if arrived < t <= first_token]
        window_s = (during[-1] if running_result.finish_reason != "cancelled" and during else first_token) - arrived
        # The longest wait of the running reply meanwhile, up to its first piece after the prompt's first token.
        after = [t for t in times if t > first_token][:1]
        waits = [b - a for a, b in zip([times[before - 1], *during], [*during, *after])] or [first_token - arrived]
        # Alone: the same reply over the same tokens (a reply decodes slower as it grows).
        count = max(len(during), 1)
        alone_times, alone_done = _streamed(
            engine,
            "alone",
            running,
            GenerationSettings(max_new_tokens=before + count + 8, min_new_tokens=before + count + 8, temperature=0),
        )
        alone_done.result(3600)
    finally:
        engine.close()
    alone_s = alone_times[min(before - 1 + count, len(alone_times) - 1)] - alone_times[before - 1]
    alone_tokens_per_s = count / alone_s
    during_tokens_per_s = len(during) / window_s if window_s > 0 else 0.0
    return {
        "prompt_tokens": long_result.usage.prompt_tokens,
        "first_token_s": first_token - arrived,
        "during_tokens": len(during),
        "window_s": window_s,
        "during_tokens_per_s": during_tokens_per_s,
        "alone_tokens_per_s": alone_tokens_per_s,
        "ratio": during_tokens_per_s / alone_tokens_per_s,
        "longest_gap_ms": max(waits) * 1000,
        "longest_gaps_ms": sorted((w * 1000 for w in waits), reverse=True)[:5],
        "running_ended_first": running_result.finish_reason != "cancelled",
        "long_finish_reason": long_result.finish_reason,
        "other_load": other.cores,
    }


def long_prefill_runs_in_subprocess(model, cache_dir, dtype, prompt, prompt_tokens) -> dict:
    """In a process of its own, decoding only in the engine's thread, as in a model worker."""
    import subprocess
    import sys

    from .processes import REPO

    code = (
        "import json, sys; from benchmarks.measure import long_prefill_runs; "
        "print('RESULT ' + json.dumps(long_prefill_runs(*json.loads(sys.argv[1]))))"
    )
    args = json.dumps([str(model), str(cache_dir), dtype, prompt, prompt_tokens])
    done = subprocess.run(
        [sys.executable, "-c", code, args], cwd=REPO, capture_output=True, text=True, check=True, timeout=7200
    )
    return json.loads(done.stdout.split("RESULT ", 1)[1])


# --- evaluation against a per-case loop ---------------------------------------------------------

EVAL_INSTRUCTIONS = 'Reply with JSON only, in the shape {"answer": <text>}.'
EVAL_QUESTIONS = [
    "What is the capital of France?",
    "Name a primary colour.",
    "Which planet is known as the red planet, and why does it look red from Earth?",
    "Give one word that rhymes with cat.",
    "How many legs does a spider have?",
    "What do bees make from the nectar they collect from flowers in spring and summer?",
    "Translate 'good morning' into Spanish.",
    "What is 12 times 12?",
]
EVAL_SETUP = """
from django.contrib.auth.models import User
from accounts.services import api_token_create
from evals.services import cases_create
from prompts.services import prompt_create
admin = User.objects.get(username="admin")
prompt_create(owner=admin, name="Bench eval", slug="bench-eval", version={{
    "instructions": {instructions!r}, "template": "{{{{ question }}}}", "max_new_tokens": {tokens}, "temperature": 0}})
rows = [{{"prompt": "bench-eval", "input": {{"question": q}}, "expected": "x", "tags": [tag]}}
        for tag, q in {cases!r}]
cases_create(user=admin, rows=rows, source="api")
print("TOKEN", api_token_create(user=admin, name="bench")[1])
"""


def eval_questions(count: int, *, label: str = "case") -> list[str]:
    return [f"{EVAL_QUESTIONS[n % len(EVAL_QUESTIONS)]} ({label} {n + 1})" for n in range(count)]


LARGE_EVALUATION_CASES = 400


async def chat_during_evaluation(server, session, token: str, prompt: str, *, replies: int = 3) -> dict:
    """Chat tokens/s as the WebSocket client sees them, alone and then while a large evaluation runs
    (its cases decoded by the same model worker): medians of `replies` replies each."""
    alone = [await single_reply(server, session, prompt) for _ in range(replies)]
    evaluation_id = (
        await asyncio.to_thread(
            _api, server, token, "POST", "/api/evaluations/", {"prompt": "bench-eval", "tag": "large"}
        )
    )["id"]
    path = f"/api/evaluations/{evaluation_id}/"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # until its cases stream through the worker
        state = await asyncio.to_thread(_api, server, token, "GET", path)
        if state["done"] > 0 or state["status"] not in ("queued", "running"):
            break
        await asyncio.sleep(0.2)
    during = [await single_reply(server, session, prompt) for _ in range(replies)]
    state = await asyncio.to_thread(_api, server, token, "GET", path)
    await asyncio.to_thread(_api, server, token, "POST", f"/api/evaluations/{evaluation_id}/cancel/")
    alone_tps = sorted(r["tokens_per_s"] for r in alone)[len(alone) // 2]
    during_tps = sorted(r["tokens_per_s"] for r in during)[len(during) // 2]
    return {
        "alone": alone,
        "during": during,
        "alone_tokens_per_s": alone_tps,
        "during_tokens_per_s": during_tps,
        "ratio": during_tps / alone_tps,
        "evaluation_running_throughout": state["status"] == "running",
        "evaluation_cases_done": state["done"],
    }


def per_case_loop(loaded: LoadedModel, questions: list[str], tokens: int) -> dict:
    """The baseline: one `generate` call per case, greedy, `tokens` long, as a plain script would."""
    with OtherLoad() as other:
        started = time.perf_counter()
        for question in questions:
            ids = render_prompt_ids(
                loaded, [{"role": "system", "content": EVAL_INSTRUCTIONS}, {"role": "user", "content": question}]
            )
            raw_run(loaded, ids, tokens)
        wall_s = time.perf_counter() - started
    return {
        "cases": len(questions),
        "wall_s": wall_s,
        "cases_per_s": len(questions) / wall_s,
        "other_load": other.cores,
    }


def _api(server, token: str, method: str, path: str, body=None):
    import urllib.request

    request = urllib.request.Request(
        server.base_url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _until_ended(server, token: str, path: str, timeout: float) -> dict:
    """Poll a job through the API until it ends; its final state, or RuntimeError unless finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _api(server, token, "GET", path)
        if state["status"] not in ("queued", "running"):
            break
        time.sleep(0.5)
    if state["status"] != "finished":
        raise RuntimeError(f"the bench job {path} ended {state['status']}: {state.get('error')}")
    return state


def studio_evaluation(server, token: str, *, tag: str, timeout: float = 1800) -> dict:
    """One evaluation through the API and the studio's job worker; its own elapsed time."""
    evaluation_id = _api(server, token, "POST", "/api/evaluations/", {"prompt": "bench-eval", "tag": tag})["id"]
    with OtherLoad(server_pids(server)) as other:
        state = _until_ended(server, token, f"/api/evaluations/{evaluation_id}/", timeout)
    return {
        "cases": state["done"],
        "wall_s": state["elapsed_s"],
        "cases_per_s": state["done"] / state["elapsed_s"],
        "other_load": other.cores,
    }


# --- training: the studio's job against plain trl -----------------------------------------------

PLAIN_TRL = """
import json, sys, time
from pathlib import Path
from studio.llm.training import TrainingConfig, build_trainer
folder = Path(sys.argv[1])
config = TrainingConfig(**json.loads((folder / "config.json").read_text()))
rows = [json.loads(line) for line in (folder / "data.jsonl").read_text().splitlines() if line.strip()]
trainer, _, _ = build_trainer(config, rows, folder / "plain")   # the same trl configuration, no studio around it
started = time.perf_counter()
trainer.train()
print(json.dumps({"tokens": trainer.state.num_input_tokens_seen, "seconds": time.perf_counter() - started}))
"""


def plain_trl_run(job_folder: Path) -> dict:
    """The job's own config and data, trained by a plain script: SFTTrainer and nothing else."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", PLAIN_TRL, str(job_folder)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "tokens": result["tokens"],
        "seconds": result["seconds"],
        "tokens_per_s": result["tokens"] / result["seconds"],
    }


def studio_training_run(
    server, token: str, *, prompt: str, tag: str, hyperparameters: dict, timeout: float = 1800
) -> dict:
    """A fine-tune through the API and the job worker; its non-padding tokens per second of training."""
    job_id = _api(
        server, token, "POST", "/api/fine-tunes/", {"prompt": prompt, "tag": tag, "hyperparameters": hyperparameters}
    )["id"]
    state = _until_ended(server, token, f"/api/fine-tunes/{job_id}/", timeout)
    return {"job": job_id, "tokens": state["tokens_seen"], "tokens_per_s": state["tokens_per_s"]}

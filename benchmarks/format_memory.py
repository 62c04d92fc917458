"""Memory a model worker keeps after the hostile output formats of issue 25, each sent 10 times
(another letter each time): a JSON Schema whose `pattern` is `^(a{1000}){1000}$`, a regex format
`(?:a{1000}){1000}`, a `$ref` loop with no finite answer, and `[a-z]*a[a-z]{200}` (cheap to write,
its automaton doubles with each letter). Each goes straight to a batch engine on the tiny test
model (SmolLM2's tokenizer, so llguidance's work is the real model's), with `max_new_tokens` 2 as
the attacker sent it (the last format: 300, to let its states pile up), as a format stored before
the save-time checks would arrive; the API and the version form refuse the first three before
anything compiles (`clean_format`).

    .venv/bin/python -m benchmarks.format_memory

Prints, per format, the process's resident memory before and after its 10 replies, the growth
kept, and how the replies ended. Not part of `make bench` (a figure of memory, not speed).
"""

from __future__ import annotations

import gc
import json
import time
from concurrent.futures import Future

MIB = 2**20


def resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / MIB


def hostile_formats(letter: str) -> dict:
    return {
        "schema pattern ^(x{1000}){1000}$": {
            "type": "json_schema",
            "schema": {
                "type": "object",
                "properties": {"s": {"type": "string", "pattern": f"^({letter}{{1000}}){{1000}}$"}},
                "required": ["s"],
            },
        },
        "regex (?:x{1000}){1000}": {"type": "regex", "pattern": f"(?:{letter}{{1000}}){{1000}}"},
        "$ref loop with no end": {
            "type": "json_schema",
            "schema": {
                "$defs": {"n": {"type": "object", "properties": {letter: {"$ref": "#/$defs/n"}}, "required": [letter]}},
                "$ref": "#/$defs/n",
            },
        },
        "[a-z]*x[a-z]{200}": {"type": "regex", "pattern": f"[a-z]*{letter}[a-z]{{200}}"},
    }


def main() -> None:
    from studio.llm import GenerationSettings, load_model
    from studio.llm.engine import BatchEngine, EngineRequest
    from tests.settings import TEST_CACHE, TINY_MODEL_DIR

    loaded = load_model(str(TINY_MODEL_DIR), cache_dir=TEST_CACHE / "models", dtype="float32")
    engine = BatchEngine(loaded, max_batch=8)
    try:
        warm = Future()
        engine.submit(
            EngineRequest(
                key="warm",
                messages=[{"role": "user", "content": "hi"}],
                settings=GenerationSettings(max_new_tokens=2, temperature=0),
                output_format={"type": "json"},
                on_delta=lambda d: None,
                on_done=warm.set_result,
            )
        )
        warm.result(120)
        figures = {}
        for name in hostile_formats("a"):
            gc.collect()
            before, started, endings = resident_mib(), time.perf_counter(), {}
            for n, letter in enumerate("abcdefghij"):
                output_format = hostile_formats(letter)[name]
                tokens = 300 if name.startswith("[a-z]") else 2
                done = Future()
                try:
                    engine.submit(
                        EngineRequest(
                            key=(name, n),
                            messages=[{"role": "user", "content": f"answer {n}"}],
                            settings=GenerationSettings(max_new_tokens=tokens, temperature=1.0, seed=n),
                            output_format=output_format,
                            on_delta=lambda d: None,
                            on_done=done.set_result,
                        )
                    )
                    result = done.result(600)
                    ending = (
                        f"{result.finish_reason} {getattr(result, 'error_code', '')}".strip() + f" {result.text[:8]!r}"
                    )
                except Exception as exc:  # refused when compiled (the matcher could not even start)
                    ending = f"refused: {exc.__class__.__name__}"
                endings[ending] = endings.get(ending, 0) + 1
            gc.collect()
            after = resident_mib()
            figures[name] = {
                "before_mib": round(before),
                "after_mib": round(after),
                "kept_mib": round(after - before),
                "seconds": round(time.perf_counter() - started, 1),
                "replies": endings,
            }
            print(
                f"{name:34} RSS {before:6.0f} -> {after:6.0f} MiB, kept {after - before:+6.0f} MiB in "
                f"{figures[name]['seconds']:5.1f} s; replies: {endings}",
                flush=True,
            )
        print("RESULT " + json.dumps(figures))
    finally:
        engine.close()


if __name__ == "__main__":
    main()

"""Choosing the constrained-decoding library by measurement (issue 17): xgrammar, llguidance and
outlines-core on this CPU, SmolLM2's tokenizer, a schema with the JSON Schema features teams use.

    .venv/bin/pip install --no-deps xgrammar==0.2.8 outlines-core==0.2.14   # llguidance is a dependency
    .venv/bin/python -m benchmarks.grammar_choice

Prints, per library: the schema's compile time, the time per token of computing the next-token
mask and advancing past the chosen token (decoding a valid answer), one reply and 8 at once, and
whether each feature compiles and is enforced.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"enum": ["refund", "exchange", "question", "complaint"]},
        "customer": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "vip": {"type": "boolean"}},
            "required": ["name", "vip"],
            "additionalProperties": False,
        },
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1}},
                "required": ["sku", "quantity"],
                "additionalProperties": False,
            },
        },
        "note": {"type": "string"},
    },
    "required": ["intent", "customer", "items"],
    "additionalProperties": False,
}
ANSWER = json.dumps(
    {
        "intent": "refund",
        "customer": {"name": "Ann Lee", "vip": False},
        "items": [{"sku": "A-100", "quantity": 2}, {"sku": "B-7", "quantity": 1}],
        "note": "The box arrived open.",
    }
)


def tokenizer():
    from transformers import AutoTokenizer

    folder = next(Path("data/models").glob("SmolLM2-135M-Instruct*"))
    return AutoTokenizer.from_pretrained(folder)


def measure_llguidance(hf, ids):
    import llguidance
    import llguidance.hf
    import llguidance.torch as llt

    tok = llguidance.hf.from_tokenizer(hf)
    started = time.perf_counter()
    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        json.dumps(SCHEMA), defaults={"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
    )
    matcher = llguidance.LLMatcher(tok, grammar)
    compile_s = time.perf_counter() - started
    assert not matcher.is_error(), matcher.get_error()

    def run(batch):
        matchers = [llguidance.LLMatcher(tok, grammar) for _ in range(batch)]
        mask = llt.allocate_token_bitmask(batch, tok.vocab_size)
        times = []
        for token in ids:
            t = time.perf_counter()
            for row, m in enumerate(matchers):
                llt.fill_next_token_bitmask(m, mask, row)
                assert m.consume_token(token), "the valid answer was refused"
            times.append((time.perf_counter() - t) / batch)
        return statistics.median(times) * 1e6

    return compile_s, run(1), run(8)


def measure_xgrammar(hf, ids):
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(hf, vocab_size=len(hf))
    compiler = xgr.GrammarCompiler(info, cache_enabled=False)
    started = time.perf_counter()
    compiled = compiler.compile_json_schema(json.dumps(SCHEMA), any_whitespace=False)
    compile_s = time.perf_counter() - started

    def run(batch):
        matchers = [xgr.GrammarMatcher(compiled) for _ in range(batch)]
        mask = xgr.allocate_token_bitmask(batch, info.vocab_size)
        times = []
        for token in ids:
            t = time.perf_counter()
            for row, m in enumerate(matchers):
                m.fill_next_token_bitmask(mask, row)
                assert m.accept_token(token), "the valid answer was refused"
            times.append((time.perf_counter() - t) / batch)
        return statistics.median(times) * 1e6

    return compile_s, run(1), run(8)


def measure_outlines(hf, ids):
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    started = time.perf_counter()
    vocabulary = Vocabulary.from_pretrained_tokenizer(hf) if hasattr(Vocabulary, "from_pretrained_tokenizer") else None
    if vocabulary is None:
        eos = hf.eos_token_id
        vocab = {}
        for token, token_id in hf.get_vocab().items():
            if token_id == eos:
                continue
            vocab.setdefault(hf.convert_tokens_to_string([token]), []).append(token_id)
        vocabulary = Vocabulary(eos, vocab)
    regex = build_regex_from_schema(json.dumps(SCHEMA))
    index = Index(regex, vocabulary)
    compile_s = time.perf_counter() - started

    def run(batch):
        guides = [Guide(index) for _ in range(batch)]
        times = []
        for token in ids:
            t = time.perf_counter()
            for guide in guides:
                allowed = guide.get_tokens()
                assert token in allowed, "the valid answer was refused"
                guide.advance(token)
            times.append((time.perf_counter() - t) / batch)
        return statistics.median(times) * 1e6

    return compile_s, run(1), run(8)


def main():
    hf = tokenizer()
    ids = hf.encode(ANSWER, add_special_tokens=False)
    print(
        f"schema: enum, nested object, array of objects, required, additionalProperties false; "
        f"answer {len(ids)} tokens; vocabulary {len(hf)}"
    )
    for name, measure in (
        ("llguidance 1.9.1", measure_llguidance),
        ("xgrammar 0.2.8", measure_xgrammar),
        ("outlines-core 0.2.14", measure_outlines),
    ):
        try:
            compile_s, one, eight = measure(hf, ids)
            print(
                f"{name:22} compile {compile_s * 1000:8.1f} ms   mask+advance per token: batch 1 {one:7.1f} us, "
                f"batch 8 {eight:7.1f} us a reply"
            )
        except Exception as exc:
            print(f"{name:22} failed: {exc.__class__.__name__}: {str(exc)[:200]}")


if __name__ == "__main__":
    main()

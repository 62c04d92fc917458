"""`make loop-demo`: the method on the real default model, start to end, in a throwaway data folder.

A task SmolLM2-135M gets wrong: pull the two cities out of a travel sentence as exactly
{"from": ..., "to": ...}. 120 cases are imported from a CSV (through the import's own mapping and
checks), 40 held out for evaluation. Version 1 has instructions only; version 2 adds three
few-shot examples taken from the training cases. Both are evaluated on the held-out cases with
the JSON-equal scorer, by the job workers' runner with a model worker in this process (the
same batching engine that serves the chat). Version 3 is version 1 with a JSON Schema as its
output format (enforced while decoding): the failures it fixes were of form, the ones that
remain are of content. Then a LoRA fine-tune
on the 80 training cases (the job workers' fine-tune runner: peft + trl, float32 on the CPU)
and version 1 (no examples) evaluated on the fine-tuned model. The pass rates, the comparisons
and the time each step took are printed.

The retrieval step (before the fine-tune) answers questions about a fictional e-bike maker whose
facts the model cannot know: a knowledge base of the five Markdown documents in
finetune/demo_corpus/, ingested by the job workers' ingestion function in this process; 20
questions (demo_corpus/questions.csv) imported as cases, each with its expected fact and the
passage that holds it as the retrieval judgment; a prompt whose version 1 has no retrieval and
whose version 2 attaches the base, both evaluated with the `contains` scorer; the pass rates, and
recall@5 and MRR@10 of version 2's retrieval.

The optimiser step (after the schema version, before the retrieval step and the fine-tune) starts an
optimisation of version 2 (the few-shot step's) through the optimiser's service, on the train split
with the JSON-equal scorer and a budget in minutes, runs it with the job workers' runner in this
process, saves its best candidate as a new version and evaluates that on the held-out cases, as the
optimiser page's two buttons do.
"""

import csv
import io
import json
import random
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import BaseCommand

from evals import importing, selectors, services
from evals.models import FailureCase
from evals.runner import run_evaluation
from finetune import services as finetune_services
from finetune.runner import run_fine_tune
from knowledge import services as knowledge_services
from knowledge.ingestion import ingest_document
from knowledge.models import Document
from optimiser import services as optimiser_services
from optimiser.models import Candidate
from optimiser.runner import run_optimisation
from prompts import services as prompt_services

CITIES = [
    "Paris",
    "Rome",
    "Berlin",
    "Madrid",
    "Lisbon",
    "Vienna",
    "Prague",
    "Oslo",
    "Dublin",
    "Athens",
    "Warsaw",
    "Zurich",
    "Brussels",
    "Amsterdam",
    "Stockholm",
    "Helsinki",
]
SENTENCES = [
    "I flew from {a} to {b} on Monday.",
    "Tomorrow we take the train from {a} to {b}.",
    "My sister drove from {a} all the way to {b}.",
    "The bus leaves {a} at noon and reaches {b} at six.",
    "After a week in {a} I moved on to {b}.",
    "Our flight {a} - {b} was delayed by an hour.",
]
TRIP_SCHEMA = {
    "type": "object",
    "properties": {"from": {"type": "string", "maxLength": 40}, "to": {"type": "string", "maxLength": 40}},
    "required": ["from", "to"],
    "additionalProperties": False,
}
# The retrieval step's corpus: Markdown documents about a made-up company, and its questions.
CORPUS = Path(__file__).resolve().parents[2] / "demo_corpus"
# At the default 200 tokens each of these short documents is one chunk, and the top 5 would be the
# whole corpus: chunks of 64 tokens (16 of them) make the top 5 a choice, and keep what the small
# model reads short.
CORPUS_CHUNK_TOKENS, CORPUS_CHUNK_OVERLAP = 64, 8
SUPPORT_INSTRUCTIONS = (
    "You answer customers' questions about Quillfeather Cycles, a maker of e-bikes. Answer in one short sentence."
)
SUPPORT_RETRIEVAL = {"k": 5, "mode": "hybrid"}
INSTRUCTIONS = (
    'Extract the cities of the trip. Reply with JSON only, exactly {"from": "<city>", "to": "<city>"}, '
    "and nothing else."
)


class Command(BaseCommand):
    help = "Show the loop (import, evaluate, few-shot, evaluate again) on the configured model."

    def add_arguments(self, parser):
        parser.add_argument("--no-fine-tune", action="store_true", help="stop before the fine-tune step")
        parser.add_argument("--no-retrieval", action="store_true", help="leave out the retrieval step")
        parser.add_argument("--no-optimiser", action="store_true", help="leave out the optimiser step")
        parser.add_argument(
            "--optimiser-minutes", type=int, default=15, help="the optimiser's budget (no candidate starts past it)"
        )
        parser.add_argument("--epochs", type=float, default=3)
        parser.add_argument("--cases", type=int, default=120)
        parser.add_argument("--held-out", type=int, default=40, help="cases in the eval split")
        parser.add_argument("--seed", type=int, default=7)

    def handle(self, *args, **options):
        # The model worker's code (torch) loads when the demo runs, not when Django lists its commands
        from chat.serving.worker import WorkerThread  # noqa: PLC0415

        call_command("migrate", interactive=False, verbosity=0)
        settings.LLM_QUEUE_POLL_SECONDS = 0.1  # the worker below finds the cases by looking at the queue
        self.say("loading the model into an in-process model worker…")
        with WorkerThread():
            self.run_loop(**options)

    def run_loop(
        self, *, cases, held_out, seed, no_fine_tune, no_retrieval, no_optimiser, optimiser_minutes, epochs, **options
    ):
        started = time.perf_counter()
        user, _ = get_user_model().objects.get_or_create(username="loop-demo", defaults={"is_staff": True})
        slug = f"trip-cities-{int(time.time())}"
        prompt = prompt_services.prompt_create(
            owner=user,
            name="Trip cities",
            slug=slug,
            version={
                "instructions": INSTRUCTIONS,
                "template": "{{ sentence }}",
                "max_new_tokens": 32,
                "temperature": 0,
                "commit_message": "Instructions only",
            },
        )
        self.say(f"prompt {slug} v1: instructions only")

        rows = self.cases_csv(cases, seed)
        columns, parsed = importing.parse_file("trips.csv", rows.encode())
        checked = importing.check_rows(
            parsed, importing.guess_mapping(columns, ["sentence"]), {"prompt": slug}, user=user
        )
        imported = importing.import_checked(
            checked, user=user, only_valid=False, eval_share=held_out / cases, seed=seed
        )
        eval_count = FailureCase.objects.filter(pk__in=[c.pk for c in imported], split="eval").count()
        self.say(
            f"imported {len(imported)} cases from CSV ({len(imported) - eval_count} train, {eval_count} eval; "
            f"{len(checked['errors'])} rows with errors)"
        )

        first = self.evaluate(user, prompt.versions.get(number=1))
        train = list(FailureCase.objects.filter(prompt_version__prompt=prompt, split="train").order_by("id")[:3])
        _, examples = services.few_shot_examples(train)
        v2 = prompt_services.version_create(
            prompt=prompt,
            author=user,
            fields={
                **prompt.versions.get(number=1).editable_fields(),
                "examples": examples,
                "commit_message": "Three few-shot examples from the failure cases",
            },
        )
        self.say(f"prompt {slug} v2: + {len(examples)} few-shot examples from training cases")
        second = self.evaluate(user, v2)
        comparison = selectors.comparison(first, second, user=user)["counts"]
        sample = second.results.first()
        if sample:
            self.say(f"a v2 answer: {sample.output.strip()[:120]!r} (expected {sample.case.expected})")
        v3 = prompt_services.version_create(
            prompt=prompt,
            author=user,
            fields={
                **prompt.versions.get(number=1).editable_fields(),
                "output_format": {"type": "json_schema", "schema": TRIP_SCHEMA},
                "commit_message": "Instructions + a JSON Schema, no examples",
            },
        )
        self.say(f"prompt {slug} v3: instructions + JSON Schema output format, no examples")
        third = self.evaluate(user, v3)
        constrained = selectors.comparison(first, third, user=user)["counts"]
        self.say("")
        self.say(
            f"v1 (instructions only):     pass rate {first.passed}/{first.done} = {first.pass_rate:.0%} "
            f"({self.failure_kinds(first)})"
        )
        self.say(
            f"v2 (+ few-shot examples):   pass rate {second.passed}/{second.done} = {second.pass_rate:.0%} "
            f"({self.failure_kinds(second)})"
        )
        self.say(
            f"v3 (+ schema, no examples): pass rate {third.passed}/{third.done} = {third.pass_rate:.0%} "
            f"({self.failure_kinds(third)})"
        )
        self.say(
            f"v1 → v2: {comparison['fixed']} fixed, {comparison['regressed']} regressed, "
            f"{comparison['still_failing']} still failing, {comparison['still_passing']} still passing"
        )
        self.say(
            f"v1 → v3: {constrained['fixed']} fixed, {constrained['regressed']} regressed, "
            f"{constrained['still_failing']} still failing, {constrained['still_passing']} still passing"
        )
        wrong = third.results.filter(passed=False).first()
        if wrong:
            self.say(f"a v3 failure: {wrong.output.strip()[:120]!r} (expected {wrong.case.expected})")
        optimised = None
        if not no_optimiser:
            self.say("")
            optimised = self.optimiser_step(user, v2, second, minutes=optimiser_minutes)
        if not no_retrieval:
            self.say("")
            self.retrieval_step(user)
        if not no_fine_tune:
            tuned_run, train_s = self.fine_tune(user, prompt, epochs)
            tuned = selectors.comparison(second, tuned_run, user=user)["counts"]
            self.say("")
            self.say(f"base, instructions only:  {first.pass_rate:.0%} ({first.elapsed_s:.1f} s to evaluate)")
            self.say(f"base, few-shot examples:  {second.pass_rate:.0%} ({second.elapsed_s:.1f} s to evaluate)")
            self.say(f"base, schema:             {third.pass_rate:.0%} ({third.elapsed_s:.1f} s to evaluate)")
            if optimised:
                self.say(
                    f"base, optimised:          {optimised.pass_rate:.0%} ({optimised.elapsed_s:.1f} s to evaluate)"
                )
            self.say(
                f"fine-tuned, instructions: {tuned_run.pass_rate:.0%} ({train_s:.1f} s to train, "
                f"{tuned_run.elapsed_s:.1f} s to evaluate)"
            )
            self.say(
                f"few-shot → fine-tuned: {tuned['fixed']} fixed, {tuned['regressed']} regressed, "
                f"{tuned['still_failing']} still failing, {tuned['still_passing']} still passing"
            )
        self.say(f"total time {time.perf_counter() - started:.1f} s (model {first.model_name})")

    def optimiser_step(self, user, version, few_shot, *, minutes):
        """Version `version` optimised on the train split (its held-out evaluation is `few_shot`);
        the best candidate saved and evaluated on the held-out cases. Returns that evaluation."""
        optimisation = optimiser_services.optimisation_create(
            user=user, version=version, split="train", scorers=[{"type": "json_equal"}], budget={"minutes": minutes}
        )
        self.say(
            f"optimiser step: optimisation #{optimisation.pk} of v{version.number} on the train split "
            f"({len(optimisation.search_case_ids)} cases to search on, {len(optimisation.check_case_ids)} to "
            f"check), json_equal, at most {minutes} minute{'s' if minutes != 1 else ''}…"
        )
        run_optimisation(optimisation.pk)  # the job workers' runner, here in this process
        optimisation.refresh_from_db()
        if optimisation.status != "finished":
            raise RuntimeError(f"the optimisation ended {optimisation.status}: {optimisation.error}")
        candidates = list(optimisation.candidates.all())
        for candidate in candidates:
            self.say(f"  {candidate.position}. {candidate.description}: {self.candidate_figures(candidate)}")
        best = optimisation.best
        if best is None:  # every reply failed: the worker's log says why
            raise RuntimeError("the optimisation measured no candidate")
        if best.kind == Candidate.Kind.BASE:  # nothing new to save: the held-out figure is the version's own
            self.say(f"no candidate beat v{version.number} as it is")
            held_out = few_shot
        else:
            saved = optimiser_services.optimisation_save(optimisation=optimisation, user=user)
            self.say(f"prompt {version.prompt.slug} v{saved.number}: {saved.commit_message}")
            evaluation = optimiser_services.evaluate_held_out(optimisation=optimisation, user=user)
            held_out = self.evaluated(evaluation, saved)
        measured = sum(candidate.status == Candidate.Status.SCORED for candidate in candidates)
        self.say(
            f"optimiser step: best candidate {held_out.pass_rate:.0%} on held-out (search {best.search_score:.0%}, "
            f"check {best.check_score or 0:.0%}), {measured} candidates, {optimisation.elapsed_s:.0f} s"
        )
        self.say(
            f"few-shot v{version.number} → optimised: {few_shot.pass_rate:.0%} → {held_out.pass_rate:.0%} on the "
            f"{held_out.done} held-out cases ({best.description})"
        )
        return held_out

    @staticmethod
    def candidate_figures(candidate) -> str:
        if candidate.status != Candidate.Status.SCORED:
            return f"{candidate.status} ({candidate.reason})" if candidate.reason else candidate.status
        figures = f"search {candidate.search_passed}/{candidate.search_scored}"
        if candidate.checked:
            figures += f", check {candidate.check_passed}/{candidate.check_scored}"
        return figures

    def fine_tune(self, user, prompt, epochs):
        # Trained as version 1 (instructions only) serves the cases: the version it is evaluated with.
        job = finetune_services.job_create(
            user=user,
            name=f"{prompt.slug}-ft",
            prompt_slug=prompt.slug,
            filters={"split": "train"},
            hyperparameters={"epochs": epochs},
            version=1,
        )
        self.say(f"fine-tuning {job.name}: LoRA, {job.example_count} training cases, {epochs:g} epochs…")
        started = time.perf_counter()
        run_fine_tune(job.pk)  # the job workers' runner: the training process, here from this one
        job.refresh_from_db()
        train_s = time.perf_counter() - started
        if job.status != "finished":
            raise RuntimeError(f"the fine-tune ended {job.status}: {job.error}")
        train_losses = [point["loss"] for point in job.losses if "loss" in point]
        eval_losses = [point["eval_loss"] for point in job.losses if "eval_loss" in point]
        self.say(
            f"trained {job.done} steps in {train_s:.1f} s ({job.tokens_per_s or 0:.0f} tokens/s); training loss "
            f"{train_losses[0]:.3f} → {train_losses[-1]:.3f}"
            + (f", evaluation loss {eval_losses[-1]:.3f}" if eval_losses else "")
        )
        return self.evaluate(user, prompt.versions.get(number=1), model=job.name), train_s

    def retrieval_step(self, user):
        """Questions on the corpus's facts, answered without and with its knowledge base."""
        started = time.perf_counter()
        settings.KNOWLEDGE_CHUNK_TOKENS, settings.KNOWLEDGE_CHUNK_OVERLAP = CORPUS_CHUNK_TOKENS, CORPUS_CHUNK_OVERLAP
        knowledge_base = self.corpus_knowledge_base(user)
        ingest_s = time.perf_counter() - started
        chunks = sum(knowledge_base.documents.values_list("chunk_count", flat=True))
        self.say(
            f"retrieval step: knowledge base {knowledge_base.name!r}: {knowledge_base.documents.count()} "
            f"documents, {chunks} chunks of at most {knowledge_base.chunk_tokens} tokens, ingested in "
            f"{ingest_s:.1f} s"
        )

        slug = f"quillfeather-support-{int(time.time())}"
        prompt = prompt_services.prompt_create(
            owner=user,
            name="Quillfeather support",
            slug=slug,
            version={
                "instructions": SUPPORT_INSTRUCTIONS,
                "template": "{{ question }}",
                "max_new_tokens": 48,
                "temperature": 0,
                "commit_message": "Instructions only",
            },
        )
        without = prompt.versions.get(number=1)
        with_knowledge = prompt_services.version_create(
            prompt=prompt,
            author=user,
            fields={
                **without.editable_fields(),
                "retrieval": {"knowledge_bases": [knowledge_base.pk], **SUPPORT_RETRIEVAL},
                "commit_message": f"Retrieval from {knowledge_base.name}",
            },
        )
        with (CORPUS / "questions.csv").open(newline="") as questions:
            rows = list(csv.DictReader(questions))
        documents = "\n".join(path.read_text() for path in CORPUS.glob("*.md"))
        unfound = [row["passage"] for row in rows if row["passage"] not in documents]
        if unfound:  # a judgment no chunk can match would only lower recall, silently
            raise RuntimeError(f"questions.csv names passages no document holds: {unfound}")
        services.cases_create(
            user=user,
            source="import",
            rows=[
                {
                    "prompt": slug,
                    "version": 1,
                    "input": {"question": row["question"]},
                    "expected": row["expected"],
                    "passages": row["passage"],
                    "split": "eval",
                    "tags": ["quillfeather"],
                }
                for row in rows
            ],
        )
        self.say(
            f"prompt {slug}: {len(rows)} questions on the documents' facts, each with its passage; v1 "
            f"instructions only, v2 + the knowledge base ({SUPPORT_RETRIEVAL['mode']}, "
            f"top {SUPPORT_RETRIEVAL['k']})"
        )

        scorer = [{"type": "contains", "ignore_case": True}]  # the expected fact, anywhere in the answer
        first = self.evaluate(user, without, scorers=scorer)
        second = self.evaluate(user, with_knowledge, scorers=scorer)
        sample = second.results.filter(passed=True).first() or second.results.first()
        if sample:
            self.say(f"a v2 answer: {sample.output.strip()[:120]!r} (expected {sample.case.expected!r})")
        figures = selectors.retrieval_figures_of(second)
        self.say(
            f"retrieval step: pass rate without knowledge base: {first.pass_rate:.0%}, with: {second.pass_rate:.0%}"
        )
        self.say(
            f"retrieval step: recall@{figures['k']}: {figures['recall_at_k']:.2f}, MRR@10: {figures['mrr_at_10']:.2f}"
        )
        self.say(
            f"retrieval step: {time.perf_counter() - started:.1f} s in all ({ingest_s:.1f} s ingesting, "
            f"{first.elapsed_s:.1f} + {second.elapsed_s:.1f} s evaluating)"
        )

    def corpus_knowledge_base(self, user):
        """A knowledge base of the corpus's documents, each ingested by the job workers' function."""
        knowledge_base = knowledge_services.knowledge_base_create(
            owner=user, name="Quillfeather handbook", description="Showroom, warranty, parts, returns, servicing"
        )
        files = [
            SimpleUploadedFile(path.name, path.read_bytes(), "text/markdown") for path in sorted(CORPUS.glob("*.md"))
        ]
        for added in knowledge_services.documents_add(user=user, knowledge_base=knowledge_base, files=files):
            ingest_document(added.document.pk)  # the job workers' task, here in this process
        failed = knowledge_base.documents.exclude(status=Document.Status.READY)
        if failed.exists():
            raise RuntimeError(
                "documents not ingested: "
                + "; ".join(f"{document.name}: {document.status} {document.error}" for document in failed)
            )
        return knowledge_base

    def evaluate(self, user, version, model="", scorers=({"type": "json_equal"},)):
        evaluation = services.evaluation_create(
            user=user, version=version, model_name=model, filters={"split": "eval"}, scorers=list(scorers)
        )
        return self.evaluated(evaluation, version, model)

    def evaluated(self, evaluation, version, model=""):
        """`evaluation` run by the job workers' runner, here in this process, and its figures said."""
        run_evaluation(evaluation.pk)  # the job workers' runner, here in this process
        evaluation.refresh_from_db()
        if evaluation.status != "finished":
            raise RuntimeError(f"evaluation {evaluation.status}: {evaluation.error}")
        self.say(
            f"evaluated v{version.number}{' on ' + model if model else ''} on {evaluation.done} held-out cases: "
            f"{evaluation.passed} pass "
            f"({evaluation.elapsed_s:.1f} s)"
        )
        return evaluation

    @staticmethod
    def failure_kinds(evaluation) -> str:
        """Its failures split into form (not {"from": <text>, "to": <text>}) and content (wrong cities)."""
        form = content = 0
        for output in evaluation.results.filter(passed=False).values_list("output", flat=True):
            try:
                answer = json.loads(output)
                shaped = (
                    isinstance(answer, dict)
                    and set(answer) == {"from", "to"}
                    and all(isinstance(value, str) for value in answer.values())
                )
            except ValueError:
                shaped = False
            form, content = form + (not shaped), content + shaped
        return f"failures: {form} of form, {content} of content"

    @staticmethod
    def cases_csv(count: int, seed: int) -> str:
        chooser = random.Random(seed)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["sentence", "expected", "tags"])
        seen = set()
        while len(seen) < count:
            origin, destination = chooser.sample(CITIES, 2)
            sentence = chooser.choice(SENTENCES).format(a=origin, b=destination)
            if sentence in seen:
                continue
            seen.add(sentence)
            writer.writerow([sentence, json.dumps({"from": origin, "to": destination}), "trip-cities"])
        return buffer.getvalue()

    def say(self, line):
        self.stdout.write(line)
        self.stdout.flush()

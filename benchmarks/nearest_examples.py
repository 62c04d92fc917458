"""How long choosing examples per input takes a reply: `python -m benchmarks.nearest_examples`.

In a fresh data folder of its own (a temporary SQLite database), N cases of one prompt are made
and embedded (as the background task does), then a version with `"examples": {"from": {"split":
"train"}, "k": 6}` chooses examples for inputs it has not seen: the first lookup builds the pool's
matrix (cached per process), the others are what a reply waits for (one embed of the input, one
matrix product, the chosen cases rendered through the template). Prints one line per figure.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time

WORDS = (
    "invoice refund password login printer screen battery delivery parcel order account email "
    "payment card upgrade crash slow error update address phone router wifi cable licence"
).split()
TEAMS = ("billing", "accounts", "hardware", "shipping", "network")


def ticket(rng: random.Random) -> str:
    return (
        f"My {rng.choice(WORDS)} and {rng.choice(WORDS)} have a problem with the {rng.choice(WORDS)} since "
        f"{rng.choice(('Monday', 'yesterday', 'the update', 'last week'))}"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nearest_examples")
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--lookups", type=int, default=200)
    args = parser.parse_args(argv)
    os.environ["STUDIO_DATA_DIR"] = tempfile.mkdtemp(prefix="nearest-bench-")
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    import django
    from django.core.management import call_command

    from studio.data_dir import prepare

    prepare()
    django.setup()
    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    from evals.models import FailureCase, input_digest
    from evals.nearest_examples import embed_cases
    from prompts import services as prompt_services
    from prompts.examples import examples_for

    rng = random.Random(0)
    owner = get_user_model().objects.create_user("bench")
    fields = {"template": "Ticket: {{ ticket }}", "instructions": "Name the team."}
    prompt = prompt_services.prompt_create(owner=owner, name="Bench", slug="bench", version=fields)
    rows = [
        {"prompt": "bench", "version": 1, "input": {"ticket": ticket(rng)}, "expected": rng.choice(TEAMS)}
        for _ in range(args.cases)
    ]
    # Made directly (services.cases_create checks each for duplicates: minutes for thousands).
    version_one = prompt.versions.get(number=1)
    made = FailureCase.objects.bulk_create(
        [
            FailureCase(
                prompt_version=version_one,
                input_variables=row["input"],
                expected=row["expected"],
                shared=True,
                created_by=owner,
                source=FailureCase.Source.API,
                input_digest=input_digest(row["input"], ""),
            )
            for row in rows
        ]
    )
    started = time.perf_counter()
    embed_cases([case.pk for case in made])
    embedded_s = time.perf_counter() - started
    version = prompt_services.version_create(
        prompt=prompt, author=owner, fields={**fields, "examples": {"from": {"split": "train"}, "k": 6}}
    )
    started = time.perf_counter()
    examples_for(version, user=owner, variables={"ticket": ticket(rng)})
    first_ms = (time.perf_counter() - started) * 1000
    timings = []
    for _ in range(args.lookups):
        started = time.perf_counter()
        examples, _ = examples_for(version, user=owner, variables={"ticket": ticket(rng) + " please"})
        timings.append((time.perf_counter() - started) * 1000)
        assert len(examples) == 6
    timings.sort()
    p95 = timings[int(0.95 * (len(timings) - 1))]
    print(
        f"case embeddings computed: {args.cases} cases in {embedded_s:.1f} s "
        f"({embedded_s / args.cases * 1000:.1f} ms a case, in the background)"
    )
    print(f"nearest examples first lookup ms: {first_ms:.0f} ({args.cases} cases: the pool's matrix is read)")
    print(f"nearest examples lookup p95 ms: {p95:.1f} ({args.cases} cases; median {statistics.median(timings):.1f})")


if __name__ == "__main__":
    main()

"""A fine-tune trains on what the version is served with: each case's input through the version's
instructions, few-shot examples and the passages its retrieval finds, assembled by the serving
code itself; the chat template turns it into the very tokens serving sends the model."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from chat import services as chat_services
from chat.selectors import chat_history_before
from evals import services as case_services
from finetune import services
from prompts import services as prompt_services
from studio.llm.loading import chat_template_ids
from tests.settings import TINY_MODEL_DIR

pytestmark = pytest.mark.django_db

PARTS = "\n\n".join(
    [
        "# Spare parts",
        "Part ZX-4411 is the return spring of the model B press.",
        "Part ZX-4412 is the gasket of the model C press.",
    ]
)
NETWORK = "# Network\n\nTo restart the router, hold the power button for ten seconds until the lights blink."
QUESTION = "Which part is the gasket of the model C press?"


@pytest.fixture
def plant(alice, settings, tmp_path):
    """alice's base, shared with the team."""
    from knowledge.ingestion import ingest_document
    from knowledge.services import documents_add, knowledge_base_create

    settings.KNOWLEDGE_FILES_DIR = tmp_path / "knowledge"
    settings.KNOWLEDGE_CHUNK_TOKENS, settings.KNOWLEDGE_CHUNK_OVERLAP = 24, 0
    base = knowledge_base_create(owner=alice, name="Plant", shared=True)
    for item in documents_add(
        user=alice,
        knowledge_base=base,
        files=[
            SimpleUploadedFile(name, text.encode(), "text/markdown")
            for name, text in (("parts.md", PARTS), ("network.md", NETWORK))
        ],
    ):
        ingest_document(item.document.pk)
    return base


@pytest.fixture
def support(alice, plant):
    """Version 1 (the case was flagged under it): bare. Version 2 (served): instructions, two
    few-shot examples, the shared base searched for the question."""
    prompt = prompt_services.prompt_create(
        owner=alice,
        name="Support",
        slug="support",
        version={"instructions": "Answer.", "template": "Q: {{ question }}"},
    )
    case_services.cases_create(
        user=alice,
        source="api",
        rows=[{"prompt": "support", "input": {"question": QUESTION}, "actual": "No idea.", "expected": "ZX-4412 [1]."}],
    )
    prompt_services.version_create(
        prompt=prompt,
        author=alice,
        fields={
            "instructions": "Answer from the sources, citing them as [n].",
            "template": "Q: {{ question }}",
            "examples": [
                {"input": "Q: What is ZX-1?", "output": "A bolt [1]."},
                {"input": "Q: Who are you?", "output": "The plant's assistant."},
            ],
            "retrieval": {"knowledge_bases": [plant.pk], "k": 2, "mode": "hybrid", "query": "question"},
        },
    )
    return prompt


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY_MODEL_DIR)


def test_a_cases_training_prompt_is_the_prompt_serving_sends_for_its_input(carol, support, tokenizer):
    planned = services.job_plan(
        user=carol, prompt=support, filters={}, objective="sft", hyperparameters={}, method="lora"
    )
    (row,) = planned["rows"]
    served_version = support.versions.get(number=2)
    _, reply = chat_services.conversation_start_from_prompt(
        owner=carol, prompt_version=served_version, variables={"question": QUESTION}
    )
    served = chat_history_before(message=reply)  # what the model worker renders for this reply
    assert row["prompt"] == served
    system, *examples, asked = served
    assert "citing them as [n]" in system["content"] and "ZX-4412 is the gasket" in system["content"]
    assert [m["content"] for m in examples] == [
        "Q: What is ZX-1?",
        "A bolt [1].",
        "Q: Who are you?",
        "The plant's assistant.",
    ]
    # As tokens: trl tokenizes the prompt with the generation prompt, then prompt + completion, and
    # trains on the completion after their common prefix: that prefix is exactly what serving sends.
    served_ids = chat_template_ids(tokenizer, served)
    training_prompt_ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)
    training_ids = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True)
    training_prompt_ids = list(
        training_prompt_ids["input_ids"] if hasattr(training_prompt_ids, "keys") else training_prompt_ids
    )
    training_ids = list(training_ids["input_ids"] if hasattr(training_ids, "keys") else training_ids)
    assert training_prompt_ids == served_ids and training_ids[: len(served_ids)] == served_ids
    assert tokenizer.decode(training_ids[len(served_ids) :]).startswith("ZX-4412 [1].")


def test_the_preview_says_which_version_and_shows_its_examples_and_passages(client, carol, support):
    client.force_login(carol)
    html = client.post("/fine-tunes/plan/", {"prompt": "support"}, headers={"HX-Request": "true"}).content.decode()
    assert "Each case as <strong>version 2</strong> serves it" in html and "2 retrieved passages" in html
    assert "ZX-4412 is the gasket" in html and "A bolt [1]." in html  # passages and examples, in the text trained on


def test_each_cases_own_version_can_be_chosen_and_a_version_that_does_not_fit_is_counted(carol, support):
    own = services.job_plan(
        user=carol, prompt=support, filters={}, objective="sft", hyperparameters={}, method="lora", version="own"
    )
    assert own["version"] is None and own["rows"][0]["prompt"] == [
        {"role": "system", "content": "Answer."},
        {"role": "user", "content": f"Q: {QUESTION}"},
    ]
    prompt_services.version_create(
        prompt=support, author=support.owner, fields={"instructions": "x", "template": "{{ part }} and {{ press }}"}
    )
    refused = services.job_plan(
        user=carol, prompt=support, filters={}, objective="sft", hyperparameters={}, method="lora"
    )
    assert refused["rows"] == [] and "1 case does not fit the version's template" in refused["why_none"]
    with pytest.raises(services.FineTuneError, match="has no version 9"):
        services.job_plan(
            user=carol, prompt=support, filters={}, objective="sft", hyperparameters={}, method="lora", version="9"
        )


def test_the_job_keeps_the_version_and_the_runner_trains_on_the_same_rows(
    carol, support, monkeypatch, settings, tmp_path, client
):
    from finetune import runner
    from finetune.models import FineTuneJob

    settings.DATA_DIR = tmp_path
    job = services.job_create(user=carol, name="", prompt_slug="support", filters={})
    assert job.prompt_version.number == 2
    client.force_login(carol)
    assert "as version 2 serves them" in client.get(job.get_absolute_url()).content.decode()
    planned_rows = services.job_plan(
        user=carol, prompt=support, filters={}, objective="sft", hyperparameters={}, method="lora"
    )["rows"]
    written = {}

    def stop_before_training(job, folder, command, device):
        written["rows"] = (folder / "data.jsonl").read_text()
        return {"status": "failed", "error": "stopped by the test"}

    monkeypatch.setattr(runner, "_watch", stop_before_training)
    monkeypatch.setattr(runner, "base_model_folder", lambda convert: TINY_MODEL_DIR)
    runner.run_fine_tune(job.pk)
    import json

    assert [json.loads(line) for line in written["rows"].splitlines()] == planned_rows
    assert FineTuneJob.objects.get(pk=job.pk).data_hash == job.data_hash


def test_before_launch_a_retrieving_version_assembles_only_the_first_cases_and_the_job_all(
    carol, alice, support, monkeypatch, settings, tmp_path, client
):
    from finetune import runner
    from finetune.models import FineTuneJob

    monkeypatch.setattr(services, "PLAN_ASSEMBLED_CASES", 1)  # searching passages costs 0.3 s a case here
    case_services.cases_create(
        user=alice,
        source="api",
        rows=[
            {"prompt": "support", "input": {"question": f"How do I restart router {n}?"}, "expected": "Hold it."}
            for n in range(2)
        ],
    )
    planned = services.job_plan(
        user=carol, prompt=support, filters={}, objective="sft", hyperparameters={}, method="lora"
    )
    assert planned["extrapolated"] and planned["assembled"] == 1 and planned["example_count"] == 3
    client.force_login(carol)
    panel = client.post("/fine-tunes/plan/", {"prompt": "support"}).content.decode()
    assert "about <strong>3</strong> examples" in panel and "Figures from the first 1 cases" in panel
    settings.DATA_DIR = tmp_path
    job = services.job_create(user=carol, name="", prompt_slug="support", filters={})
    written = {}
    monkeypatch.setattr(
        runner,
        "_watch",
        lambda job, folder, command, device: (
            written.setdefault("rows", (folder / "data.jsonl").read_text().splitlines())
            and {"status": "failed", "error": "stopped"}
        ),
    )
    monkeypatch.setattr(runner, "base_model_folder", lambda convert: TINY_MODEL_DIR)
    runner.run_fine_tune(job.pk)
    job = FineTuneJob.objects.get(pk=job.pk)
    assert len(written["rows"]) == 3 and job.example_count == 3 and len(job.data_hash) == 64

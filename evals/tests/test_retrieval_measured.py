"""Retrieval measured on the failure cases: a case flagged from a reply keeps the passages it read;
a person marks the right ones (or "not in the knowledge base"), imports bring them as a column;
evaluations report recall@k, MRR@10 and the share whose right passage was never read, and the
comparison of two retrieval settings says, per case, whether the right passage moved in or out."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from chat import services as chat_services
from chat.models import Message
from evals import selectors, services
from evals.retrieval_figures import figures, moved
from evals.runner import run_evaluation
from prompts import services as prompt_services

# Each fact a chunk of its own (24-token chunks), about a made-up product, so that retrieval and
# not the tiny model's knowledge decides.
FACTS = [
    ("Warranty", "The Quibble 3000 blender carries a warranty of seven years on its motor."),
    ("Colours", "The Quibble 3000 blender comes in teal, saffron and charcoal."),
    ("Cleaning", "Rinse the Quibble jug with warm water and a drop of vinegar after each use."),
    ("Noise", "At full speed the Quibble 3000 runs at seventy-two decibels."),
    ("Power", "The Quibble 3000 motor draws nine hundred watts."),
    ("Lid", "The Quibble lid locks with a quarter turn clockwise."),
    ("Blades", "Quibble blades are made of hardened surgical steel."),
    ("Jug", "The Quibble jug holds one and a half litres."),
    ("Feet", "Four suction feet keep the Quibble 3000 from walking across the counter."),
    ("Cable", "The Quibble power cable is one metre long and stores in the base."),
    ("Recipes", "The Quibble booklet holds forty smoothie recipes."),
    ("Returns", "An unopened Quibble can be returned within thirty days."),
]
MANUAL = "\n\n".join(f"# {title}\n\n{text}" for title, text in FACTS)


@pytest.fixture
def manual(alice, settings, tmp_path):
    from knowledge.ingestion import ingest_document
    from knowledge.services import documents_add, knowledge_base_create

    settings.KNOWLEDGE_FILES_DIR = tmp_path / "knowledge"
    settings.KNOWLEDGE_CHUNK_TOKENS, settings.KNOWLEDGE_CHUNK_OVERLAP = 24, 0
    knowledge_base = knowledge_base_create(owner=alice, name="Quibble manual", shared=True)
    [added] = documents_add(
        user=alice,
        knowledge_base=knowledge_base,
        files=[SimpleUploadedFile("quibble.md", MANUAL.encode(), "text/markdown")],
    )
    ingest_document(added.document.pk)
    return knowledge_base


def version_with(alice, manual, k, slug="quibble", mode="dense"):
    prompt = prompt_services.prompt_create(
        owner=alice,
        name="Quibble help",
        slug=slug,
        version={
            "instructions": "Answer from the sources.",
            "template": "{{ question }}",
            "max_new_tokens": 4,
            "retrieval": {"knowledge_bases": [manual.pk], "k": k, "mode": mode},
        },
    )
    return prompt.versions.get()


def test_judgments_parse_from_an_import_cell():
    assert services.clean_judgment("Not in the knowledge base") == {"right": [], "not_in_kb": True}
    assert services.clean_judgment("quibble.md p. 3") == {
        "right": [{"document": "quibble.md", "page": 3}],
        "not_in_kb": False,
    }
    assert services.clean_judgment("manual.pdf") == {
        "right": [{"document": "manual.pdf", "page": None}],
        "not_in_kb": False,
    }
    assert services.clean_judgment("The jug holds one and a half litres.")["right"] == [
        {"text": "The jug holds one and a half litres."}
    ]
    assert len(services.clean_judgment('["manual.pdf, page 2", {"text": "seven years"}]')["right"]) == 2
    with pytest.raises(services.CaseError):
        services.clean_judgment([{"page": 2}])


def test_figures_count_recall_mrr_and_what_was_never_read():
    class Case:
        def __init__(self, judgment):
            self.retrieval_judgment = judgment

    source = lambda chunk, text="": {"chunk": chunk, "text": text, "document": "m.md", "page": None}  # noqa: E731
    pairs = [
        (Case({"right": [{"chunk": 1}], "not_in_kb": False}), [source(1), source(2)]),  # rank 1
        (Case({"right": [{"chunk": 3}], "not_in_kb": False}), [source(2), source(9), source(3)]),  # rank 3 > k
        (Case({"right": [{"text": "seven years"}], "not_in_kb": False}), [source(5, "warranty of Seven  years")]),
        (Case({"right": [], "not_in_kb": True}), [source(4)]),
        (Case({}), [source(1)]),  # not judged: not counted
    ]
    result = figures(pairs, k=2)
    assert result["judged"] == 4 and result["recall_at_k"] == pytest.approx(2 / 3)
    assert result["mrr_at_10"] == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert result["never_retrieved"] == pytest.approx(2 / 4) and result["not_in_kb"] == 1 and result["missed"] == 1
    assert moved(pairs[1][0], pairs[1][1], pairs[1][1], 2, 3) == "in"
    assert moved(pairs[1][0], pairs[1][1], pairs[1][1], 3, 2) == "out"


@pytest.mark.django_db
def test_a_flagged_reply_keeps_its_passages_and_a_person_marks_the_right_one(client, alice, bob, manual):
    version = version_with(alice, manual, k=3)
    conversation, reply = chat_services.conversation_start_from_prompt(
        owner=alice, prompt_version=version, variables={"question": "How long is the Quibble warranty?"}
    )
    Message.objects.filter(pk=reply.pk).update(status="complete", content="Two years.")
    reply.refresh_from_db()
    case = services.case_flag(user=alice, message=reply, expected="Seven years on the motor.", shared=True)
    assert [s["chunk"] for s in case.retrieved] == [s["chunk"] for s in reply.retrieval["sources"]]
    right = next(s for s in case.retrieved if "seven years" in s["text"])
    client.force_login(bob)  # not the case's author nor the prompt's editor
    assert client.post(f"/cases/{case.pk}/retrieval/", {"chunk": [right["chunk"]]}).status_code == 403
    client.force_login(alice)
    page = client.get(f"/cases/{case.pk}/").content.decode()
    assert 'name="chunk" value="%d"' % right["chunk"] in page
    # Passages are shown whole, as rendered Markdown sanitised like replies.
    retrieved = [{**s, "text": s["text"] + " **in full**<script>alert(1)</script>"} for s in case.retrieved]
    type(case).objects.filter(pk=case.pk).update(retrieved=retrieved)
    page = client.get(f"/cases/{case.pk}/").content.decode()
    assert "<strong>in full</strong>" in page and "<script>alert(1)" not in page
    type(case).objects.filter(pk=case.pk).update(retrieved=case.retrieved)
    response = client.post(f"/cases/{case.pk}/retrieval/", {"chunk": [right["chunk"]]})
    assert response.status_code == 200 and "1 right passage" in response.content.decode()
    case.refresh_from_db()
    assert case.retrieval_judgment["right"][0]["chunk"] == right["chunk"]
    client.post(f"/cases/{case.pk}/retrieval/", {"not_in_kb": "on"})
    case.refresh_from_db()
    assert case.retrieval_judgment == {"right": [], "not_in_kb": True}


@pytest.mark.django_db
def test_an_import_brings_judgments_as_a_column(alice, manual):
    version_with(alice, manual, k=3)
    cases = services.cases_create(
        user=alice,
        source="import",
        rows=[
            {
                "prompt": "quibble",
                "input": {"question": "How loud is it?"},
                "expected": "72 dB",
                "passages": "At full speed the Quibble 3000 runs at seventy-two decibels.",
            },
            {
                "prompt": "quibble",
                "input": {"question": "Is it dishwasher safe?"},
                "expected": "Unknown",
                "passages": "not in the knowledge base",
            },
        ],
    )
    assert cases[0].retrieval_judgment["right"][0]["text"].startswith("At full speed")
    assert cases[1].retrieval_judgment == {"right": [], "not_in_kb": True}


QUESTIONS = [
    ("How long is the warranty on the motor?", "seven years on its motor"),
    ("Which colours can I buy it in?", "teal, saffron and charcoal"),
    ("How much power does the motor draw?", "nine hundred watts"),
    ("How big is the jug?", "one and a half litres"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("model_worker")
def test_evaluations_report_retrieval_and_the_comparison_shows_passages_moving(client, alice, manual):
    narrow = version_with(alice, manual, k=1, slug="quibble")
    wide = prompt_services.version_create(
        prompt=narrow.prompt,
        author=alice,
        fields={**narrow.editable_fields(), "retrieval": {**narrow.retrieval, "k": 5}},
    )
    cases = services.cases_create(
        user=alice,
        source="import",
        rows=[
            {"prompt": "quibble", "version": 1, "input": {"question": question}, "expected": answer, "passages": answer}
            for question, answer in QUESTIONS
        ]
        + [
            {
                "prompt": "quibble",
                "version": 1,
                "input": {"question": "Can it crush ice?"},
                "expected": "?",
                "passages": "not in the knowledge base",
            }
        ],
    )
    runs = []
    for version in (narrow, wide):
        evaluation = services.evaluation_create(
            user=alice, version=version, model_name="", filters={}, scorers=[{"type": "exact_match"}]
        )
        run_evaluation(evaluation.pk)
        evaluation.refresh_from_db()
        assert evaluation.status == "finished", evaluation.error
        runs.append(evaluation)
    result = runs[0].results.get(case=cases[0])
    assert len(result.retrieved) >= 10  # the top 10, whatever k, for MRR@10
    first, second = (selectors.retrieval_figures_of(run) for run in runs)
    assert first["judged"] == second["judged"] == 5 and first["k"] == 1 and second["k"] == 5
    assert second["recall_at_k"] >= first["recall_at_k"] and second["recall_at_k"] == 1.0
    assert first["mrr_at_10"] == second["mrr_at_10"] > 0.5  # same ranking, read deeper
    assert second["never_retrieved"] == pytest.approx(1 / 5) and second["not_in_kb"] == 1
    client.force_login(alice)
    page = client.get(f"/evaluations/{runs[1].pk}/").content.decode()
    assert "recall@5" in page and "MRR@10" in page
    api = client.get(f"/evaluations/{runs[1].pk}/").status_code
    assert api == 200
    comparison = selectors.comparison(runs[0], runs[1], user=alice)
    moves = {row["case"].pk: row["passage_moved"] for row in comparison["rows"]}
    assert moves[cases[4].pk] == "" and set(moves.values()) <= {"in", "both", ""}
    if first["recall_at_k"] < 1.0:
        assert "in" in moves.values()
        assert (
            "moved into the top k"
            in client.get(f"/evaluations/compare/?a={runs[0].pk}&b={runs[1].pk}").content.decode()
        )

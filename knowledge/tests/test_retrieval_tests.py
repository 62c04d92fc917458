"""Retrieval test sets: imported from JSONL and CSV (bounded before any work, a bad line named,
nothing stored on an error), measured on a small planted base (recall@1/5/10, MRR@10, per
question the rank, "not retrieved", or a passage the base does not hold at all), measured again
when the base changes (in the request for a small test, by a job for a large one, and queued after
a rebuild switches over), and who may read, add and delete them."""

import json
from types import SimpleNamespace

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.services import api_token_create
from knowledge import retrieval_tests, services
from knowledge.ingestion import ingest_document
from knowledge.models import RetrievalMeasurement, RetrievalQuestion, RetrievalTest
from knowledge.retrieval_tests import figures_of, passage_matches
from knowledge.search import SearchError
from studio.jobs import JobStatus
from studio.request_limits import body_limit_for

from .conftest import upload
from .test_search import NETWORK, OFFICE, PARTS

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}

SPRING = "Part ZX-4411 is the return spring of the model B press."
ROUTER = "To restart the router, hold the power button for ten seconds until the lights blink."
VALVE = "Part ZX-4410 is the intake valve of the model A press."
CHEESE = "The moon is made of green cheese and the tides are its crumbs."
QUESTIONS = [
    {"question": "How can I reboot my modem?", "passages": [ROUTER]},  # a paraphrase: meaning finds it
    {"question": "ZX-4411", "passages": ["parts.md"]},  # a rare code, and a document by name (any page)
    {"question": "When is lunch served?", "passages": [{"document": "office.md", "page": None}]},
    {"question": "What is the moon made of?", "passages": [CHEESE]},  # in no document of the base
]


@pytest.fixture
def plant(alice, ingest, settings):
    """alice's shared base, one paragraph a chunk (24 tokens, no overlap)."""
    settings.KNOWLEDGE_CHUNK_TOKENS, settings.KNOWLEDGE_CHUNK_OVERLAP = 24, 0
    knowledge_base = services.knowledge_base_create(owner=alice, name="Plant", shared=True)
    documents = ingest(
        knowledge_base, alice, [upload("parts.md", PARTS), upload("network.md", NETWORK), upload("office.md", OFFICE)]
    )
    assert all(d.status == "ready" for d in documents), [d.error for d in documents]
    return knowledge_base


@pytest.fixture
def dispatched(monkeypatch):
    """The job queue's sends, kept: the test runs each job itself."""
    sent = []
    monkeypatch.setattr("studio.jobs.dispatch", lambda model, job_id: sent.append((model.__name__, job_id)))
    return sent


def bearer(user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, name='t')[1]}"}


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def post_json(path, body, user):
    return Client().post(path, json.dumps(body), content_type="application/json", **bearer(user))


def jsonl(rows) -> bytes:
    return "\n".join(json.dumps(row) for row in rows).encode()


def hit(text="", document="a.md", page=None, **extra):
    return SimpleNamespace(text=text, document=document, page=page, chunk_id=1, **extra)


# --- The matching rule --------------------------------------------------------------------------


def test_a_text_passage_matches_a_hit_that_holds_it_whatever_its_spacing_and_case():
    passage = {"text": "Hold the power button\nfor ten seconds."}
    assert passage_matches(passage, hit("To restart: HOLD the power   button for ten seconds. Then wait."))
    assert not passage_matches(passage, hit("Press the reset button once."))


def test_a_passage_cut_in_two_by_a_chunk_boundary_matches_either_half():
    passage = {"text": "one two three four five six seven eight"}
    assert passage_matches(passage, hit("... one two three four and then something else"))  # the first half
    assert passage_matches(passage, hit("before it: five six seven eight"))  # the last half
    assert not passage_matches(passage, hit("one two three, four five six seven"))  # neither half whole


def test_a_hit_smaller_than_the_passage_matches_when_the_passage_holds_it():
    assert passage_matches({"text": "First sentence. Second sentence. Third one."}, hit("Second sentence."))


def test_a_document_passage_matches_by_name_and_page_or_a_copy_collapsed_under_the_hit():
    assert passage_matches({"document": "Handbook.PDF", "page": 4}, hit(document="handbook.pdf", page=4))
    assert not passage_matches({"document": "handbook.pdf", "page": 4}, hit(document="handbook.pdf", page=5))
    assert passage_matches({"document": "handbook.pdf", "page": None}, hit(document="handbook.pdf", page=9))
    copy = hit(document="mirror.pdf", page=1, also_in=[{"chunk": 7, "document": "handbook.pdf", "page": 4}])
    assert passage_matches({"document": "handbook.pdf", "page": 4}, copy)
    assert not passage_matches({"text": "anything"}, copy)  # a copy is matched by its place only


def test_the_figures_read_the_ranks():
    results = [
        {"question": q, "rank": rank, "passage_not_in_base": missing, "matched": {}}
        for q, rank, missing in [("a", 1, False), ("b", 3, False), ("c", 7, False), ("d", None, True)]
    ]
    figures = figures_of(results, [10.0, 20.0, 30.0, 40.0])
    assert figures["recall_at_1"] == 0.25 and figures["recall_at_5"] == 0.5 and figures["recall_at_10"] == 0.75
    assert figures["mrr_at_10"] == pytest.approx((1 + 1 / 3 + 1 / 7) / 4, abs=1e-4)
    assert (figures["not_retrieved"], figures["passage_not_in_base"], figures["questions"]) == (1, 1, 4)
    assert figures["latency_ms"]["p50"] == 25.0 and 38 <= figures["latency_ms"]["p95"] <= 40


# --- Importing ----------------------------------------------------------------------------------


def test_a_jsonl_file_is_imported_through_the_api(alice, plant):
    rows = [
        {"question": "How can I reboot my modem?", "passages": [ROUTER, "network.md p. 1"]},
        {"question": "ZX-4411", "passages": [{"text": SPRING}, {"document": "parts.md", "page": 2}]},
    ]
    answer = Client().post(
        f"/api/knowledge/{plant.pk}/retrieval-tests/",
        {"name": "Plant questions", "file": SimpleUploadedFile("plant.jsonl", jsonl(rows))},
        **bearer(alice),
    )
    assert answer.status_code == 201, answer.json()
    test = RetrievalTest.objects.get(pk=answer.json()["id"])
    assert (test.name, test.source, test.question_count, test.created_by) == ("Plant questions", "import", 2, alice)
    assert [q.passages for q in test.questions.all()] == [
        [{"text": ROUTER}, {"document": "network.md", "page": 1}],
        [{"text": SPRING}, {"document": "parts.md", "page": 2}],
    ]


def test_a_csv_file_is_imported_with_several_passages_in_a_cell_or_one_passage(alice, plant):
    several = f'question,passages\n"How can I reboot my modem?","{ROUTER} || network.md p. 1"\nZX-4411,{SPRING}\n'
    test = retrieval_tests.retrieval_test_import(
        user=alice, knowledge_base=plant, name="", upload=SimpleUploadedFile("plant.csv", several.encode())
    )
    assert test.name == "plant.csv" and test.question_count == 2
    assert test.questions.get(ordinal=0).passages == [{"text": ROUTER}, {"document": "network.md", "page": 1}]
    one = f"Question,Passage\nZX-4411,{SPRING}\n"
    test = retrieval_tests.retrieval_test_import(
        user=alice, knowledge_base=plant, name="One", upload=SimpleUploadedFile("one.csv", one.encode())
    )
    assert test.questions.get().passages == [{"text": SPRING}]


def test_questions_are_posted_as_json(alice, plant):
    answer = post_json(f"/api/knowledge/{plant.pk}/retrieval-tests/", {"name": "API", "questions": QUESTIONS}, alice)
    assert answer.status_code == 201 and answer.json()["questions"] == 4


def test_a_hundred_thousand_questions_are_refused_before_any_is_read(alice, plant, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a question was parsed")

    monkeypatch.setattr(retrieval_tests, "clean_question", never)
    lines = "\n".join('{"question": "q%d", "passages": ["p"]}' % n for n in range(100_000)).encode()
    assert len(lines) < 5 * 1024 * 1024
    answer = Client().post(
        f"/api/knowledge/{plant.pk}/retrieval-tests/",
        {"name": "Huge", "file": SimpleUploadedFile("huge.jsonl", lines)},
        **bearer(alice),
    )
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "questions: holds 100,000 questions; a retrieval test holds at most 2,000: split it",
        "code": "too_many_questions",
    }
    csv_lines = ("question,passage\n" + "\n".join(f"q{n},p" for n in range(100_000))).encode()
    with pytest.raises(retrieval_tests.RetrievalTestError, match="100,000 questions"):
        retrieval_tests.retrieval_test_import(
            user=alice, knowledge_base=plant, name="", upload=SimpleUploadedFile("huge.csv", csv_lines)
        )
    posted = post_json(
        f"/api/knowledge/{plant.pk}/retrieval-tests/",
        {"name": "Huge", "questions": [{"question": "q", "passages": ["p"]}] * 2001},
        alice,
    )
    assert posted.status_code == 400 and "at most 2,000" in posted.json()["error"]
    assert not RetrievalTest.objects.exists()


def test_a_file_over_5_mb_is_refused_by_its_size(alice, plant, settings):
    big = SimpleUploadedFile("big.jsonl", b" " * (5 * 1024 * 1024 + 1))
    with pytest.raises(retrieval_tests.RetrievalTestError) as refused:
        retrieval_tests.retrieval_test_import(user=alice, knowledge_base=plant, name="", upload=big)
    assert refused.value.status == 413 and "at most 5 MB" in refused.value.message
    for path in ("/api/knowledge/7/retrieval-tests/", "/knowledge/7/retrieval-tests/"):  # the body, before it is read
        assert body_limit_for(path) > settings.KNOWLEDGE_RETRIEVAL_TEST_MAX_BYTES > body_limit_for("/api/knowledge/")


@pytest.mark.parametrize(
    "bad, said",
    [
        ("not json at all", "line 3: Malformed JSON"),
        ('{"question": "", "passages": ["p"]}', "line 3.question: the question must not be empty"),
        (json.dumps({"question": "q" * 2001, "passages": ["p"]}), "is 2,001 characters long; at most 2,000"),
        (json.dumps({"question": "q", "passages": ["p"] * 21}), "line 3.passages: names 21 passages; at most 20"),
        (json.dumps({"question": "q", "passages": ["p" * 4001]}), "line 3.passages[0]: a passage is 4,001 characters"),
        (json.dumps({"question": "q", "passages": []}), "line 3.passages: needs at least one right passage"),
        (json.dumps({"question": "q", "passages": [{"document": "a.pdf", "page": 0}]}), "page must be a whole"),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_stored(alice, plant, bad, said):
    good = json.dumps({"question": "ZX-4411", "passages": [SPRING]})
    body = f"{good}\n\n{bad}\n{good}\n".encode()  # the blank line 2 is skipped, but counted
    answer = Client().post(
        f"/api/knowledge/{plant.pk}/retrieval-tests/",
        {"name": "Bad", "file": SimpleUploadedFile("bad.jsonl", body)},
        **bearer(alice),
    )
    assert answer.status_code == 400 and said in answer.json()["error"], answer.json()
    assert not RetrievalTest.objects.exists() and not RetrievalQuestion.objects.exists()


def test_a_csv_without_its_columns_is_refused(alice, plant):
    with pytest.raises(retrieval_tests.RetrievalTestError, match="line 1: the first line must name the columns"):
        retrieval_tests.retrieval_test_import(
            user=alice, knowledge_base=plant, name="", upload=SimpleUploadedFile("x.csv", b"a,b\nc,d\n")
        )


# --- Measuring ----------------------------------------------------------------------------------


def test_a_small_test_is_measured_when_it_is_read(alice, plant):
    test = retrieval_tests.retrieval_test_create(user=alice, knowledge_base=plant, name="Plant", questions=QUESTIONS)
    answer = Client().get(f"/api/knowledge/{plant.pk}/retrieval-tests/{test.pk}/", **bearer(alice))
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ready" and body["questions"] == 4 and body["knowledge_base"] == plant.pk
    ranks = {result["question"]: result["rank"] for result in body["results"]}
    assert ranks["How can I reboot my modem?"] == 1
    assert ranks["ZX-4411"] in (1, 2) and ranks["When is lunch served?"] is not None
    assert ranks["What is the moon made of?"] is None
    assert [r["passage_not_in_base"] for r in body["results"]] == [False, False, False, True]
    assert body["not_retrieved"] == 1 and body["passage_not_in_base"] == 1
    found = [rank for rank in ranks.values() if rank]
    assert body["recall_at_10"] == 0.75 and body["recall_at_1"] == sum(1 for r in found if r == 1) / 4
    assert body["mrr_at_10"] == pytest.approx(sum(1 / r for r in found) / 4, abs=1e-4)
    assert body["latency_ms"]["p50"] > 0 and body["latency_ms"]["p95"] >= body["latency_ms"]["p50"]
    plant.refresh_from_db()
    assert body["settings"] == {
        "chunk_tokens": 24,
        "chunk_overlap": 0,
        "embedding_model": "all-MiniLM-L6-v2",
        "fusion_weight": plant.fusion_weight,  # the base's settings, as it was measured
        "collapse_duplicates": plant.collapse_duplicates,
        "rerank": False,
        "expand_query": False,
    }
    assert body["results"][0]["matched"]["document"] == "network.md"
    listed = Client().get(f"/api/knowledge/{plant.pk}/retrieval-tests/", **bearer(alice)).json()["retrieval_tests"]
    assert [(t["id"], t["questions"], t["recall_at_5"], t["current"]) for t in listed] == [
        (test.pk, 4, body["recall_at_5"], True)
    ]


def test_a_passage_in_the_base_that_search_misses_is_not_retrieved_rather_than_missing(alice, plant):
    test = retrieval_tests.retrieval_test_create(
        user=alice,
        knowledge_base=plant,
        name="Keywords",
        questions=[
            {"question": "cafeteria lunch", "passages": [VALVE]},  # no word in common: bm25 never finds it
            {"question": "gasket", "passages": [CHEESE, "Part ZX-4412 is the gasket"]},  # the second is there
        ],
    )
    measurement = retrieval_tests.measure(test, user=alice, search_options={"mode": "bm25"})
    assert [(r["rank"], r["passage_not_in_base"]) for r in measurement["results"]] == [(None, False), (1, False)]
    assert measurement["recall_at_1"] == 0.5 and measurement["not_retrieved"] == 1
    assert not test.questions.filter(rank__isnull=False).exists()  # measure() stores nothing


def test_a_test_is_measured_again_once_the_base_changes(alice, plant, ingest):
    test = retrieval_tests.retrieval_test_create(user=alice, knowledge_base=plant, name="Plant", questions=QUESTIONS)
    assert retrieval_tests.retrieval_test_state(test, user=alice).status == "ready"
    test.refresh_from_db()
    first = test.measured_at
    assert test.questions.get(ordinal=3).passage_not_in_base
    ingest(plant, alice, [upload("moon.md", f"# Moon\n\n{CHEESE}")])  # the missing passage arrives
    test.refresh_from_db()
    assert test.measured_version != retrieval_tests.version_of(plant)  # stale
    assert retrieval_tests.retrieval_test_state(test, user=alice).status == "ready"
    test.refresh_from_db()
    assert test.measured_at > first and test.figures["not_retrieved"] == 0
    assert test.questions.get(ordinal=3).rank == 1 and not test.questions.get(ordinal=3).passage_not_in_base


def test_a_large_test_is_measured_by_a_job_with_its_progress(
    alice, plant, dispatched, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(retrieval_tests, "MEASURE_IN_REQUEST", 2)
    with django_capture_on_commit_callbacks(execute=True):
        test = retrieval_tests.retrieval_test_create(user=alice, knowledge_base=plant, name="Big", questions=QUESTIONS)
    assert dispatched == [("RetrievalMeasurement", test.pk)]  # queued when it was stored
    body = Client().get(f"/api/knowledge/{plant.pk}/retrieval-tests/{test.pk}/", **bearer(alice)).json()
    assert body["status"] == "measuring" and body["progress"] == {"done": 0, "total": 4}
    assert body["recall_at_5"] is None and [r["rank"] for r in body["results"]] == [None] * 4
    page = client_for(alice).get(f"/knowledge/{plant.pk}/retrieval-tests/{test.pk}/")
    assert 'hx-trigger="every 2s"' in page.content.decode() and "Measuring" in page.content.decode()

    retrieval_tests.measurement_run(test.pk)  # as the knowledge lane's worker runs it
    job = RetrievalMeasurement.objects.get(pk=test.pk)
    assert (job.status, job.done, job.total) == (JobStatus.FINISHED, 4, 4)
    body = Client().get(f"/api/knowledge/{plant.pk}/retrieval-tests/{test.pk}/", **bearer(alice)).json()
    assert body["status"] == "ready" and body["recall_at_10"] == 0.75 and "progress" not in body
    assert len(dispatched) == 1  # fresh figures: nothing queued again


def test_a_measurement_the_search_cannot_make_says_why_and_is_not_retried_in_a_loop(
    alice, plant, dispatched, monkeypatch
):
    monkeypatch.setattr(retrieval_tests, "MEASURE_IN_REQUEST", 2)
    test = retrieval_tests.retrieval_test_create(user=alice, knowledge_base=plant, name="Big", questions=QUESTIONS)

    def unreadable(**kwargs):
        raise SearchError("this knowledge base cannot be searched now", "mode")

    monkeypatch.setattr(retrieval_tests, "search", unreadable)
    retrieval_tests.measurement_run(test.pk)
    job = RetrievalMeasurement.objects.get(pk=test.pk)
    assert job.status == JobStatus.FAILED and job.error == "this knowledge base cannot be searched now"
    body = Client().get(f"/api/knowledge/{plant.pk}/retrieval-tests/{test.pk}/", **bearer(alice)).json()
    assert body["status"] == "failed" and body["error"] == "this knowledge base cannot be searched now"
    assert RetrievalMeasurement.objects.get(pk=test.pk).status == JobStatus.FAILED  # not queued again


def test_every_test_is_measured_again_after_a_rebuild_switches_over(
    alice, plant, dispatched, django_capture_on_commit_callbacks
):
    test = retrieval_tests.retrieval_test_create(user=alice, knowledge_base=plant, name="Plant", questions=QUESTIONS)
    retrieval_tests.retrieval_test_state(test, user=alice)
    with django_capture_on_commit_callbacks(execute=True):
        services.knowledge_base_rebuild(user=alice, knowledge_base=plant, chunk_tokens=200, chunk_overlap=0)
    assert not [sent for sent in dispatched if sent[0] == "RetrievalMeasurement"]
    for document in plant.documents.all():
        with django_capture_on_commit_callbacks(execute=True):
            ingest_document(document.pk)  # the last one switches over
    plant.refresh_from_db()
    assert not plant.rebuilding and plant.chunk_tokens == 200
    assert ("RetrievalMeasurement", test.pk) in dispatched
    retrieval_tests.measurement_run(test.pk)
    test.refresh_from_db()
    assert test.measured_version == retrieval_tests.version_of(plant) and test.measured_version["chunk_tokens"] == 200
    assert test.questions.get(ordinal=0).rank == 1  # one chunk a document now: network.md's


# --- Who may do what ----------------------------------------------------------------------------


def test_another_persons_private_base_and_its_tests_are_not_found(alice, bob, ingest):
    private = services.knowledge_base_create(owner=alice, name="Alice's notes")
    ingest(private, alice, [upload("salary.md", "# Salary\n\nMy salary review is in March.")])
    test = retrieval_tests.retrieval_test_create(
        user=alice, knowledge_base=private, name="Salary", questions=[{"question": "salary", "passages": ["March"]}]
    )
    for path in (
        f"/api/knowledge/{private.pk}/retrieval-tests/",
        f"/api/knowledge/{private.pk}/retrieval-tests/{test.pk}/",
    ):
        answer = Client().get(path, **bearer(bob))
        assert answer.status_code == 404 and "salary" not in answer.content.decode().lower()
    assert Client().delete(f"/api/knowledge/{private.pk}/retrieval-tests/{test.pk}/", **bearer(bob)).status_code == 404
    assert client_for(bob).get(f"/knowledge/{private.pk}/retrieval-tests/{test.pk}/").status_code == 404
    assert RetrievalTest.objects.filter(pk=test.pk).exists()


def test_on_a_shared_base_others_read_the_tests_but_only_its_owner_adds_or_deletes_them(alice, bob, plant):
    test = retrieval_tests.retrieval_test_create(user=alice, knowledge_base=plant, name="Plant", questions=QUESTIONS)
    assert Client().get(f"/api/knowledge/{plant.pk}/retrieval-tests/{test.pk}/", **bearer(bob)).json()["status"] == (
        "ready"
    )
    created = post_json(f"/api/knowledge/{plant.pk}/retrieval-tests/", {"name": "Mine", "questions": QUESTIONS}, bob)
    assert created.status_code == 403 and "owner" in created.json()["error"]
    uploaded = Client().post(
        f"/api/knowledge/{plant.pk}/retrieval-tests/",
        {"name": "Mine", "file": SimpleUploadedFile("q.jsonl", jsonl(QUESTIONS))},
        **bearer(bob),
    )
    assert uploaded.status_code == 403
    assert Client().delete(f"/api/knowledge/{plant.pk}/retrieval-tests/{test.pk}/", **bearer(bob)).status_code == 403
    assert (
        Client().post(f"/api/knowledge/{plant.pk}/retrieval-tests/{test.pk}/measure/", **bearer(bob)).status_code == 403
    )
    assert client_for(bob).post(f"/knowledge/{plant.pk}/retrieval-tests/{test.pk}/delete/").status_code == 403
    assert RetrievalTest.objects.count() == 1
    deleted = Client().delete(f"/api/knowledge/{plant.pk}/retrieval-tests/{test.pk}/", **bearer(alice))
    assert deleted.json() == {"id": test.pk, "deleted": True} and not RetrievalQuestion.objects.exists()


def test_a_test_of_another_base_is_not_found_under_yours(alice, bob, plant):
    test = retrieval_tests.retrieval_test_create(user=alice, knowledge_base=plant, name="Plant", questions=QUESTIONS)
    bobs = services.knowledge_base_create(owner=bob, name="Bob's")
    for user, base in ((bob, bobs), (alice, bobs)):
        answer = Client().get(f"/api/knowledge/{base.pk}/retrieval-tests/{test.pk}/", **bearer(user))
        assert answer.status_code == 404
    assert Client().delete(f"/api/knowledge/{bobs.pk}/retrieval-tests/{test.pk}/", **bearer(bob)).status_code == 404


# --- Pages --------------------------------------------------------------------------------------


def test_the_base_page_lists_the_tests_and_imports_one(alice, bob, plant):
    client = client_for(alice)
    page = client.get(f"/knowledge/{plant.pk}/").content.decode()
    assert "Retrieval tests" in page and "No retrieval tests yet." in page
    assert "Use judged cases as a retrieval test" in page and 'name="file"' in page
    imported = client.post(
        f"/knowledge/{plant.pk}/retrieval-tests/",
        {"name": "Plant questions", "file": SimpleUploadedFile("plant.jsonl", jsonl(QUESTIONS))},
        **HTMX,
    )
    assert imported.status_code == 200 and "Added" in imported.content.decode()
    test = RetrievalTest.objects.get()
    client.get(f"/knowledge/{plant.pk}/retrieval-tests/{test.pk}/")  # opening it measures it
    listed = client.get(f"/knowledge/{plant.pk}/").content.decode()
    assert (
        f'id="retrieval-test-{test.pk}"' in listed
        and f"{RetrievalTest.objects.get().figures['recall_at_5']:.2f}" in listed
    )
    refused = client.post(
        f"/knowledge/{plant.pk}/retrieval-tests/",
        {"name": "Bad", "file": SimpleUploadedFile("bad.jsonl", b'{"question": "q"}')},
        **HTMX,
    )
    assert (
        refused.status_code == 400 and "line 1.passages: needs at least one right passage" in refused.content.decode()
    )
    others = client_for(bob).get(f"/knowledge/{plant.pk}/").content.decode()
    assert "Plant questions" in others and "Use judged cases as a retrieval test" not in others


def test_a_tests_page_shows_its_figures_and_each_questions_result(alice, plant):
    test = retrieval_tests.retrieval_test_create(user=alice, knowledge_base=plant, name="Plant", questions=QUESTIONS)
    page = client_for(alice).get(f"/knowledge/{plant.pk}/retrieval-tests/{test.pk}/").content.decode()
    assert 'data-figure="recall_at_5"' in page and "MRR@10" in page and "Measure again" in page
    assert "passage not in this knowledge base" in page and "rank 1" in page
    assert "hx-trigger" not in page.split('id="retrieval-test"')[1].split(">")[0]  # measured: no polling
    again = client_for(alice).post(f"/knowledge/{plant.pk}/retrieval-tests/{test.pk}/measure/", **HTMX)
    assert again.status_code == 200 and 'data-status="ready"' in again.content.decode()
    gone = client_for(alice).post(f"/knowledge/{plant.pk}/retrieval-tests/{test.pk}/delete/", **HTMX)
    assert gone["HX-Redirect"] == f"/knowledge/{plant.pk}/#retrieval-tests" and not RetrievalTest.objects.exists()


def test_the_section_reads_its_tests_in_the_same_queries_however_many_there_are(alice, plant):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            answer = client_for(alice).get(f"/knowledge/{plant.pk}/retrieval-tests/", **HTMX)
        assert answer.status_code == 200
        return len(captured)

    retrieval_tests.retrieval_test_create(user=alice, knowledge_base=plant, name="One", questions=QUESTIONS)
    one = queries()
    for name in ("Two", "Three"):
        retrieval_tests.retrieval_test_create(user=alice, knowledge_base=plant, name=name, questions=QUESTIONS)
    assert queries() == one

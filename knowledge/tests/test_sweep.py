"""The tuning sweep: its in-memory twin ranks as the base's own search does; a sweep of a few
settings fills its table (the row of the base's settings shows the test page's figures), stops at
its budget and when cancelled; a setting is applied (ranking at once, a rebuild when its chunk
setting differs); a grid of 10,000 settings is refused before it starts; who may do what."""

import json

import pytest
from django.conf import settings
from django.test import Client

from accounts.services import api_token_create
from knowledge import retrieval_tests, services, sweep
from knowledge.ingestion import ingest_document
from knowledge.memory_index import MemoryIndex
from knowledge.models import Document, RetrievalSweep
from knowledge.search import search
from studio.jobs import JobStatus
from studio.llm.numpy_embedder import load_numpy_embedder

from .conftest import upload
from .test_search import NETWORK, OFFICE, PARTS

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}

SPRING = "Part ZX-4411 is the return spring of the model B press."
ROUTER = "To restart the router, hold the power button for ten seconds until the lights blink."
QUESTIONS = [
    {"question": "How can I reboot my modem?", "passages": [ROUTER]},  # a paraphrase: vectors find it
    {"question": "ZX-4411", "passages": [SPRING]},  # a rare code: keywords find it
    {"question": "When is lunch served?", "passages": ["office.md"]},
    {"question": "Which part is the gasket?", "passages": ["Part ZX-4412 is the gasket of the model C press."]},
    {"question": "How often are invoices sent?", "passages": ["Invoices are sent on the first working day"]},
]
GRID = {"chunk": [[24, 0], [64, 8]], "fusion_weight": [0, 0.5, 1], "collapse_duplicates": [True], "k": [2]}


@pytest.fixture
def base(alice, ingest, settings):
    """alice's shared base, one paragraph a chunk (24 tokens, no overlap), plain fusion (0.5)."""
    settings.KNOWLEDGE_CHUNK_TOKENS, settings.KNOWLEDGE_CHUNK_OVERLAP = 24, 0
    settings.KNOWLEDGE_FUSION_WEIGHT = 0.5
    knowledge_base = services.knowledge_base_create(owner=alice, name="Plant", shared=True)
    documents = ingest(
        knowledge_base, alice, [upload("parts.md", PARTS), upload("network.md", NETWORK), upload("office.md", OFFICE)]
    )
    assert all(d.status == "ready" for d in documents), [d.error for d in documents]
    return knowledge_base


@pytest.fixture
def test_set(alice, base):
    return retrieval_tests.retrieval_test_create(user=alice, knowledge_base=base, name="Plant", questions=QUESTIONS)


@pytest.fixture
def dispatched(monkeypatch):
    """The job queue's sends, kept: the test runs each job itself."""
    sent = []
    monkeypatch.setattr("studio.jobs.dispatch", lambda model, job_id: sent.append((model.__name__, job_id)))
    return sent


def bearer(user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, name='t')[1]}"}


def post_json(path, body, user):
    return Client().post(path, json.dumps(body), content_type="application/json", **bearer(user))


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def run_sweep(alice, base, test_set, grid=GRID, minutes=5) -> RetrievalSweep:
    started = sweep.sweep_create(user=alice, knowledge_base=base, test=test_set, grid=grid, minutes=minutes)
    sweep.sweep_run(started.pk)  # the job worker's task, here
    started.refresh_from_db()
    return started


def row_of(tuning_sweep, **settings) -> dict:
    return next(row for row in tuning_sweep.rows if all(row[name] == value for name, value in settings.items()))


# --- The twin -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fusion_weight", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("collapse_duplicates", [True, False])
def test_the_twin_of_the_base_ranks_as_its_search_does(alice, base, fusion_weight, collapse_duplicates):
    twin = MemoryIndex.of_base(base)
    for query in ["ZX-4411", "How can I reboot my modem?", "When is lunch served?", "spring of the press", "zzz"]:
        for k in (3, 10):
            answer = search(
                user=alice,
                knowledge_base=base,
                query=query,
                k=k,
                fusion_weight=fusion_weight,
                collapse_duplicates=collapse_duplicates,
            )
            vector = load_numpy_embedder().embed([query])[0]
            hits = twin.search(
                query, vector, k=k, fusion_weight=fusion_weight, collapse_duplicates=collapse_duplicates, rerank=False
            )
            assert [(h.chunk_id, h.text, h.document, h.page) for h in hits] == [
                (h.chunk_id, h.text, h.document, h.page) for h in answer.hits
            ], query
            assert [h.also_in for h in hits] == [h.also_in for h in answer.hits]
    twin.close()


@pytest.mark.parametrize("fusion_weight", [0.0, 0.5])
def test_a_twin_cut_again_ranks_by_keywords_in_memory_as_the_base_s_index_does(alice, base, fusion_weight):
    """With one base in the studio its keyword statistics are the twin's: the same words, weights, query."""
    twin = MemoryIndex.cut(base, chunk_tokens=24, chunk_overlap=0)
    assert twin.keywords is not None  # its own FTS5 table
    for query in ["ZX-4411", "the spring of the press", "lunch invoices", "How can I reboot my modem?"]:
        answer = search(user=alice, knowledge_base=base, query=query, k=10, fusion_weight=fusion_weight)
        vector = load_numpy_embedder().embed([query])[0]
        hits = twin.search(query, vector, k=10, fusion_weight=fusion_weight, collapse_duplicates=True, rerank=False)
        assert [(h.text, h.document) for h in hits] == [(h.text, h.document) for h in answer.hits], query
    twin.close()


def test_a_twin_cut_with_the_base_s_own_setting_holds_its_passages(base):
    cut = MemoryIndex.cut(base, chunk_tokens=24, chunk_overlap=0)
    stored = MemoryIndex.of_base(base)
    assert len(cut) == len(stored) > 5
    assert sorted((p.document, p.text, p.heading) for p in cut.passages.values()) == sorted(
        (p.document, p.text, p.heading) for p in stored.passages.values()
    )
    bigger = MemoryIndex.cut(base, chunk_tokens=64, chunk_overlap=8, progress=lambda *args: None)
    assert 0 < len(bigger) < len(cut)  # paragraphs of one document share a chunk now


# --- A sweep --------------------------------------------------------------------------------------


def test_a_sweep_measures_every_setting_and_the_row_in_use_shows_the_test_page_s_figures(
    alice, base, test_set, dispatched, ingest
):
    # Another base in the studio: the database's keyword statistics are no longer this base's alone.
    other = services.knowledge_base_create(owner=alice, name="Other")
    ingest(other, alice, [upload("spares.md", "# Spares\n\nEvery press has a spring, a valve and a gasket.")])
    tuning_sweep = run_sweep(alice, base, test_set)
    assert (tuning_sweep.status, tuning_sweep.done, tuning_sweep.total, tuning_sweep.error) == ("finished", 6, 6, "")
    assert [(r["chunk_tokens"], r["fusion_weight"]) for r in tuning_sweep.rows] == [
        (24, 0.0),
        (24, 0.5),
        (24, 1.0),
        (64, 0.0),
        (64, 0.5),
        (64, 1.0),
    ]
    assert all(row["status"] == "measured" and row["questions"] == 5 for row in tuning_sweep.rows)
    assert all(row["p95_ms"] is not None and set(row["recall_at_k"]) == {"2"} for row in tuning_sweep.rows)

    # The base's own setting: the figures its test page shows.
    state = retrieval_tests.retrieval_test_state(test_set, user=alice)
    assert state.status == "ready"
    in_use = row_of(tuning_sweep, chunk_tokens=24, fusion_weight=0.5)
    assert sweep.in_use(in_use, base)
    for figure in ("recall_at_1", "recall_at_5", "recall_at_10", "mrr_at_10"):
        assert in_use[figure] == test_set.figures[figure], figure
    assert in_use["recall_at_5"] == 1.0  # the paraphrase and the code both found

    # Keywords alone miss the paraphrase; vectors alone find it.
    assert row_of(tuning_sweep, chunk_tokens=24, fusion_weight=0.0)["recall_at_10"] < 1.0
    assert row_of(tuning_sweep, chunk_tokens=24, fusion_weight=1.0)["recall_at_10"] == 1.0
    best = tuning_sweep.best
    assert best is not None and best["recall_at_5"] == max(row["recall_at_5"] for row in tuning_sweep.rows)

    answer = Client().get(f"/api/knowledge/{base.pk}/sweeps/{tuning_sweep.pk}/", **bearer(alice)).json()
    assert answer["status"] == "finished" and answer["progress"] == {"done": 6, "total": 6, "note": ""}
    assert answer["best"] == best and answer["best_row"] == tuning_sweep.best_row and answer["error"] == ""
    assert [row["in_use"] for row in answer["rows"]] == [False, True, False, False, False, False]
    assert {"recall_at_1", "recall_at_5", "recall_at_10", "mrr_at_10", "p95_ms"} <= set(answer["rows"][0])


def test_the_default_grid_with_the_base_s_own_chunk_setting_is_sent_to_the_knowledge_lane(
    alice, base, test_set, dispatched, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        answer = post_json(f"/api/knowledge/{base.pk}/sweeps/", {"retrieval_test": test_set.pk}, alice)
    assert answer.status_code == 201, answer.json()
    created = RetrievalSweep.objects.get(pk=answer.json()["id"])
    assert dispatched == [("RetrievalSweep", created.pk)] and created.TASK == "knowledge.retrieval_sweep"
    assert settings.CELERY_TASK_ROUTES["knowledge.*"]["queue"] == settings.JOB_QUEUES["knowledge"]
    # 36 settings, and the base's own chunk setting (24 tokens) besides them: its figures are a row.
    assert (created.total, len(created.rows), created.minutes, created.status) == (48, 48, 20, "queued")
    assert created.grid["chunk"] == [[24, 0], [128, 24], [200, 30], [254, 40]]
    assert created.grid["fusion_weight"] == [0.0, 0.3, 0.5, 0.7, 0.85, 1.0]  # the base's 0.5 among them
    assert sum(sweep.in_use(row, base) for row in created.rows) == 1
    base.fusion_weight = 0.8
    assert sweep.default_grid(base)["fusion_weight"] == [0.0, 0.3, 0.5, 0.7, 0.8, 0.85, 1.0]
    again = post_json(f"/api/knowledge/{base.pk}/sweeps/", {"retrieval_test": test_set.pk}, alice)
    assert again.status_code == 409 and "already queued or running" in again.json()["error"]


def test_settings_not_reached_within_the_budget_are_listed_as_skipped(alice, base, test_set, dispatched, monkeypatch):
    measure = sweep.SweepRun.measure

    def then_out_of_time(self, *args, **kwargs):
        row = measure(self, *args, **kwargs)
        self.deadline = 0  # the budget spent after the first setting
        return row

    monkeypatch.setattr(sweep.SweepRun, "measure", then_out_of_time)
    tuning_sweep = run_sweep(alice, base, test_set)
    assert tuning_sweep.status == "finished" and tuning_sweep.done == 1
    assert [row["status"] for row in tuning_sweep.rows] == ["measured"] + ["skipped"] * 5
    assert {row.get("reason") for row in tuning_sweep.rows[1:]} == {"budget"}
    assert tuning_sweep.best_row == 0
    page = client_for(alice).get(f"/knowledge/{base.pk}/sweeps/{tuning_sweep.pk}/")
    assert page.status_code == 200 and page.content.decode().count("skipped: budget") == 5


def test_a_sweep_is_cancelled_keeping_what_it_measured(alice, base, test_set, dispatched, monkeypatch):
    measure = sweep.SweepRun.measure

    def then_cancelled(self, *args, **kwargs):
        row = measure(self, *args, **kwargs)
        sweep.sweep_cancel(user=alice, sweep=self.sweep)  # the person presses Cancel meanwhile
        return row

    monkeypatch.setattr(sweep.SweepRun, "measure", then_cancelled)
    tuning_sweep = run_sweep(alice, base, test_set)
    assert tuning_sweep.status == "cancelled"
    assert [row["status"] for row in tuning_sweep.rows] == ["measured"] + ["skipped"] * 5
    assert {row.get("reason") for row in tuning_sweep.rows[1:]} == {"cancelled"}

    queued = sweep.sweep_create(user=alice, knowledge_base=base, test=test_set, grid=GRID)
    answer = Client().post(f"/api/knowledge/{base.pk}/sweeps/{queued.pk}/cancel/", **bearer(alice))
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    assert {row["reason"] for row in answer.json()["rows"]} == {"cancelled"}
    sweep.sweep_run(queued.pk)  # its message delivered after all: nothing runs
    queued.refresh_from_db()
    assert queued.status == "cancelled" and queued.done == 0


# --- Apply ----------------------------------------------------------------------------------------


def test_a_row_is_applied_as_ranking_settings_and_a_rebuild_when_its_chunk_setting_differs(
    alice, base, test_set, dispatched
):
    tuning_sweep = run_sweep(alice, base, test_set)
    rows = tuning_sweep.rows
    vectors_only = rows.index(row_of(tuning_sweep, chunk_tokens=24, fusion_weight=1.0))
    answer = post_json(f"/api/knowledge/{base.pk}/sweeps/{tuning_sweep.pk}/apply/", {"row": vectors_only}, alice)
    assert answer.status_code == 202 and answer.json() == {"id": tuning_sweep.pk, "row": vectors_only, "rebuild": False}
    base.refresh_from_db()
    assert (base.fusion_weight, base.collapse_duplicates, base.rebuilding) == (1.0, True, False)

    bigger = rows.index(row_of(tuning_sweep, chunk_tokens=64, fusion_weight=0.5))
    answer = post_json(f"/api/knowledge/{base.pk}/sweeps/{tuning_sweep.pk}/apply/", {"row": bigger}, alice)
    assert answer.status_code == 202 and answer.json()["rebuild"] is True
    base.refresh_from_db()
    assert base.fusion_weight == 0.5 and base.rebuilding and base.building_chunk_tokens == 64
    assert base.building_chunk_overlap == 8 and base.chunk_tokens == 24  # the index in use answers until the switch
    for document in base.documents.all():
        ingest_document(document.pk)  # the rebuild, as the job workers run it
    base.refresh_from_db()
    assert (base.chunk_tokens, base.chunk_overlap, base.rebuilding) == (64, 8, False)
    assert RetrievalSweep.objects.get(pk=tuning_sweep.pk).applied_row == bigger
    # The figures of the base as it is now: the sweep's row for it.
    retrieval_tests.retrieval_test_state(test_set, user=alice)
    test_set.refresh_from_db()
    for figure in ("recall_at_1", "recall_at_5", "recall_at_10", "mrr_at_10"):
        assert test_set.figures[figure] == rows[bigger][figure], figure


def test_a_setting_is_applied_from_the_page(alice, base, test_set, dispatched):
    tuning_sweep = run_sweep(alice, base, test_set)
    client = client_for(alice)
    page = client.get(f"/knowledge/{base.pk}/sweeps/{tuning_sweep.pk}/").content.decode()
    assert "leaderboard__best" in page and page.count("Use this setting") == 5  # not on the row in use
    keywords = tuning_sweep.rows.index(row_of(tuning_sweep, chunk_tokens=24, fusion_weight=0.0))
    answer = client.post(f"/knowledge/{base.pk}/sweeps/{tuning_sweep.pk}/apply/", {"row": keywords}, **HTMX)
    assert (
        answer.status_code == 200
        and "Applied: the ranking settings are in use now (no rebuild" in answer.content.decode()
    )
    base.refresh_from_db()
    assert base.fusion_weight == 0.0
    refused = client.post(f"/knowledge/{base.pk}/sweeps/{tuning_sweep.pk}/apply/", {"row": 99}, **HTMX)
    assert refused.status_code == 400 and "must be a whole number from 0 to 5" in refused.content.decode()


def test_a_setting_not_measured_and_a_running_sweep_are_not_applied(alice, base, test_set, dispatched):
    queued = sweep.sweep_create(user=alice, knowledge_base=base, test=test_set, grid=GRID)
    answer = post_json(f"/api/knowledge/{base.pk}/sweeps/{queued.pk}/apply/", {"row": 0}, alice)
    assert answer.status_code == 409 and "still running" in answer.json()["error"]
    sweep.sweep_cancel(user=alice, sweep=queued)
    answer = post_json(f"/api/knowledge/{base.pk}/sweeps/{queued.pk}/apply/", {"row": 0}, alice)
    assert answer.status_code == 400 and answer.json()["error"] == "row: setting 1 was not measured (cancelled)"


# --- Bounds ---------------------------------------------------------------------------------------


def test_a_sweep_of_ten_thousand_settings_is_refused_before_it_starts(alice, base, test_set, dispatched, monkeypatch):
    monkeypatch.setattr(sweep, "_number", lambda *args, **kwargs: pytest.fail("a value was read"))
    grid = {
        "chunk": [[128, 24]],
        "fusion_weight": [n / 10_000 for n in range(5000)],
        "collapse_duplicates": [True, False],
    }
    answer = post_json(f"/api/knowledge/{base.pk}/sweeps/", {"retrieval_test": test_set.pk, "grid": grid}, alice)
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "grid: holds 10,000 settings (chunk settings 1 × fusion weights 5,000 × collapse 2 × rerank 1); "
        "a sweep measures at most 200: ask for fewer",
        "code": "too_many_settings",
    }
    seven = {"chunk": [[size, 8] for size in (64, 96, 128, 160, 200, 254, 24)], "fusion_weight": [0.5]}
    answer = post_json(f"/api/knowledge/{base.pk}/sweeps/", {"retrieval_test": test_set.pk, "grid": seven}, alice)
    assert answer.status_code == 400 and "at most 6" in answer.json()["error"]
    assert not RetrievalSweep.objects.exists() and dispatched == []


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"minutes": 121}, "minutes: must be a whole number from 1 to 120"),
        ({"minutes": 0}, "minutes: must be a whole number from 1 to 120"),
        ({"grid": {"fusion_weight": [1.5]}}, "grid.fusion_weight[0]: must be a number from 0 to 1"),
        ({"grid": {"chunk": [[100, 10]]}}, "grid.chunk[0]: 100 tokens: a sweep tries 64, 96, 128, 160, 200, 254"),
        ({"grid": {"chunk": [[128, 128]]}}, "grid.chunk[0] overlap: must be a whole number from 0 to 127"),
        ({"grid": {"rerank": [True]}}, "grid.rerank: no reranker is configured"),
        ({"grid": {"k": [0]}}, "grid.k[0]: must be a whole number from 1 to 50"),
        ({"grid": {"mode": ["bm25"]}}, "grid: mode: not a setting a sweep varies"),
        ({"grid": {"fusion_weight": []}}, "grid: every list needs at least one value"),
    ],
)
def test_a_bad_grid_or_budget_is_refused_naming_the_field(alice, base, test_set, dispatched, body, error):
    answer = post_json(f"/api/knowledge/{base.pk}/sweeps/", {"retrieval_test": test_set.pk, **body}, alice)
    assert answer.status_code == 400 and answer.json()["error"].startswith(error), answer.json()
    assert not RetrievalSweep.objects.exists()


def test_a_test_of_more_than_2000_questions_is_refused(alice, base, test_set):
    type(test_set).objects.filter(pk=test_set.pk).update(question_count=2001)
    test_set.refresh_from_db()
    with pytest.raises(sweep.SweepError, match="2,001 questions; a sweep measures a test of at most 2,000"):
        sweep.sweep_create(user=alice, knowledge_base=base, test=test_set)


def test_the_form_starts_a_sweep_and_shows_a_refusal_at_its_field(alice, base, test_set, dispatched):
    client = client_for(alice)
    section = client.get(f"/knowledge/{base.pk}/retrieval-tests/", **HTMX).content.decode()
    assert f"/knowledge/{base.pk}/retrieval-tests/{test_set.pk}/tune/" in section and "Tune retrieval" in section
    form = client.get(f"/knowledge/{base.pk}/retrieval-tests/{test_set.pk}/tune/").content.decode()
    assert 'value="24:0" checked' in form and 'value="128:24" checked' in form and 'value="64:8" >' in form
    fields = {
        "chunk": ["24:0"],
        "fusion_weight": "0, 2",
        "collapse_duplicates": ["on"],
        "rerank": ["off"],
        "minutes": "3",
    }
    refused = client.post(f"/knowledge/{base.pk}/retrieval-tests/{test_set.pk}/tune/", fields)
    assert refused.status_code == 400 and 'id="sweep-fusion-error"' in refused.content.decode()
    started = client.post(
        f"/knowledge/{base.pk}/retrieval-tests/{test_set.pk}/tune/", {**fields, "fusion_weight": "0, 1"}
    )
    created = RetrievalSweep.objects.get()
    assert started.status_code == 302 and started["Location"] == f"/knowledge/{base.pk}/sweeps/{created.pk}/"
    assert created.grid == {
        "chunk": [[24, 0]],
        "fusion_weight": [0.0, 1.0],
        "collapse_duplicates": [True],
        "rerank": [False],
        "k": [],
    }
    assert created.minutes == 3
    running = client.get(f"/knowledge/{base.pk}/sweeps/{created.pk}/", **HTMX).content.decode()
    assert 'hx-trigger="every 2s"' in running and "Cancel" in running


# --- Who may -------------------------------------------------------------------------------------


def test_only_the_owner_starts_cancels_or_applies_and_others_see_a_shared_base_s_sweeps(
    alice, bob, base, test_set, dispatched
):
    tuning_sweep = run_sweep(alice, base, test_set, grid={"chunk": [[24, 0]], "fusion_weight": [0.5, 1]})
    root = f"/api/knowledge/{base.pk}/sweeps/"
    assert post_json(root, {"retrieval_test": test_set.pk}, bob).status_code == 403
    assert post_json(f"{root}{tuning_sweep.pk}/apply/", {"row": 1}, bob).status_code == 403
    assert Client().post(f"{root}{tuning_sweep.pk}/cancel/", **bearer(bob)).status_code == 403
    assert Client().get(f"{root}{tuning_sweep.pk}/", **bearer(bob)).status_code == 200  # shared: readable
    assert [s["id"] for s in Client().get(root, **bearer(bob)).json()["sweeps"]] == [tuning_sweep.pk]
    page = client_for(bob).get(f"/knowledge/{base.pk}/sweeps/{tuning_sweep.pk}/")
    assert page.status_code == 200 and "Use this setting" not in page.content.decode()
    assert client_for(bob).get(f"/knowledge/{base.pk}/retrieval-tests/{test_set.pk}/tune/").status_code == 403
    assert client_for(bob).post(f"/knowledge/{base.pk}/sweeps/{tuning_sweep.pk}/apply/", {"row": 1}).status_code == 403
    base.refresh_from_db()
    assert base.fusion_weight == 0.5 and RetrievalSweep.objects.count() == 1

    base.shared = False
    base.save(update_fields=["shared"])
    assert Client().get(f"{root}{tuning_sweep.pk}/", **bearer(bob)).status_code == 404
    assert post_json(root, {"retrieval_test": test_set.pk}, bob).status_code == 404
    assert client_for(bob).get(f"/knowledge/{base.pk}/sweeps/{tuning_sweep.pk}/").status_code == 404
    # A test of another base, and a sweep of another base, are not found under this one.
    other = services.knowledge_base_create(owner=alice, name="Other")
    assert post_json(f"/api/knowledge/{other.pk}/sweeps/", {"retrieval_test": test_set.pk}, alice).status_code == 404
    assert Client().get(f"/api/knowledge/{other.pk}/sweeps/{tuning_sweep.pk}/", **bearer(alice)).status_code == 404


def test_a_base_with_no_ready_document_is_not_swept(alice, test_set, base, dispatched):
    Document.objects.filter(knowledge_base=base).update(status=Document.Status.FAILED)
    with pytest.raises(sweep.SweepError, match="no ready documents"):
        sweep.sweep_create(user=alice, knowledge_base=base, test=test_set)


def test_a_sweep_whose_worker_died_is_failed_by_the_sweeper(alice, base, test_set, dispatched, settings):
    from django.utils import timezone

    queued = sweep.sweep_create(user=alice, knowledge_base=base, test=test_set, grid=GRID)
    long_ago = timezone.now() - timezone.timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_SECONDS + 5)
    RetrievalSweep.objects.filter(pk=queued.pk).update(status=JobStatus.RUNNING, heartbeat_at=long_ago)
    sweep.sweeps_sweep()
    queued.refresh_from_db()
    assert queued.status == "failed" and "job worker stopped" in queued.error


def test_progress_says_what_it_does_and_embedding_waits_while_chat_replies_are_written(
    alice, base, test_set, dispatched, monkeypatch, settings
):
    notes, chat = [], iter([True, True])  # two looks find a reply being written, then none
    job_progress = sweep.jobs.job_progress
    monkeypatch.setattr(
        sweep.jobs,
        "job_progress",
        lambda job, **fields: notes.append(fields.get("note")) or job_progress(job, **fields),
    )
    monkeypatch.setattr(sweep.chat_activity, "replies_in_progress", lambda: next(chat, False))
    monkeypatch.setattr(sweep, "_has_gpu", lambda: False)
    settings.JOB_HEARTBEAT_SECONDS = 0.01
    tuning_sweep = run_sweep(alice, base, test_set)
    assert tuning_sweep.status == "finished" and tuning_sweep.done == 6
    assert "chunk setting 1 of 2 (24 tokens, overlap 0), the index in use: reading its passages" in notes
    assert "chunk setting 2 of 2 (64 tokens, overlap 8): reading 3 of 3 documents" in notes
    embedding = [
        note for note in notes if note and note.startswith("chunk setting 2 of 2 (64 tokens, overlap 8): embedding")
    ]
    assert embedding and embedding[-1].endswith(" passages")
    read = notes.index("chunk setting 2 of 2 (64 tokens, overlap 8): reading 3 of 3 documents")
    assert notes[read + 1 : read + 4] == [sweep.PAUSED, sweep.PAUSED, embedding[0]]  # before its first batch
    assert [note for note in notes if note and note.startswith("measured")][-1] == "measured 6 of 6 settings"

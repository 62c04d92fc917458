"""Celery adapters: a document's ingestion, a retrieval test's measurement and a tuning sweep,
delivered to a job worker of the `knowledge` lane (its queue is routed by the task's name,
studio/job_lanes.py); knowledge/ingestion.py, knowledge/retrieval_tests.py and knowledge/sweep.py
do the work.
Jobs are sent by task name (studio.jobs.dispatch), so nothing imports this."""

from studio.celery import app

from .ingestion import ingest_next_document
from .retrieval_tests import measurement_run
from .sweep import sweep_run


@app.task(name="knowledge.ingest", ignore_result=True)
def ingest_task(document_id: int) -> None:
    """`document_id` is the document whose upload sent this message; the delivery takes the queued
    document that is fairest to take now (ingestion.ingest_next_document), which may be another."""
    ingest_next_document()


@app.task(name="knowledge.measure_retrieval_test", ignore_result=True)
def measure_retrieval_test_task(test_id: int) -> None:
    measurement_run(test_id)


@app.task(name="knowledge.retrieval_sweep", ignore_result=True)
def retrieval_sweep_task(sweep_id: int) -> None:
    sweep_run(sweep_id)

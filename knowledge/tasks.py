"""Celery adapter: a document's ingestion delivered to a job worker of the `knowledge` lane (its
queue is routed by the task's name, studio/job_lanes.py); knowledge/ingestion.py does the work.
Jobs are sent by task name (studio.jobs.dispatch), so nothing imports this."""

from studio.celery import app

from .ingestion import ingest_next_document


@app.task(name="knowledge.ingest", ignore_result=True)
def ingest_task(document_id: int) -> None:
    """`document_id` is the document whose upload sent this message; the delivery takes the queued
    document that is fairest to take now (ingestion.ingest_next_document), which may be another."""
    ingest_next_document()

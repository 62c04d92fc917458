"""Celery adapter: a document's ingestion delivered to a job worker; knowledge/ingestion.py does the
work. Jobs are sent by task name (studio.jobs.dispatch), so nothing imports this."""

from studio.celery import app


@app.task(name="knowledge.ingest", ignore_result=True)
def ingest_task(document_id: int) -> None:
    from .ingestion import ingest_document

    ingest_document(document_id)

from django.apps import AppConfig
from django.db.models.signals import post_migrate

from studio import sweeping

from . import keyword_index, pgvector


class KnowledgeConfig(AppConfig):
    name = "knowledge"
    verbose_name = "Knowledge bases"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Django's app registry is not ready when this module loads: these import models
        from .retrieval_tests import measurements_sweep  # noqa: PLC0415
        from .services import ingestion_sweep  # noqa: PLC0415
        from .sweep import sweeps_sweep  # noqa: PLC0415

        sweeping.register(ingestion_sweep)  # ingestions the job queue never got, or whose worker died: resumed
        sweeping.register(measurements_sweep)  # retrieval tests' measurements never sent, or whose worker died
        sweeping.register(sweeps_sweep)  # tuning sweeps never sent, or whose worker died
        sweeping.register(pgvector.vectors_sweep)  # pgvector columns a process that started before pgvector left empty
        # A migration that rebuilds knowledge_chunk on SQLite drops its index triggers: put them back;
        # on PostgreSQL with the vector extension, add the pgvector column and its HNSW index.
        post_migrate.connect(
            keyword_index.ensure_installed, sender=self, dispatch_uid="knowledge.keyword_index.ensure_installed"
        )
        post_migrate.connect(pgvector.ensure_installed, sender=self, dispatch_uid="knowledge.pgvector.ensure_installed")

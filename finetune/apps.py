from django.apps import AppConfig

from studio import sweeping


class FinetuneConfig(AppConfig):
    name = "finetune"
    verbose_name = "Fine-tuning"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Django's app registry is not ready when this module loads: these import models
        from .embedder_services import jobs_sweep as embedder_jobs_sweep  # noqa: PLC0415
        from .services import jobs_sweep  # noqa: PLC0415

        sweeping.register(jobs_sweep)  # fine-tunes whose job worker died or never got them
        sweeping.register(embedder_jobs_sweep)  # embedder fine-tunes the same

from django.apps import AppConfig


class EvalsConfig(AppConfig):
    name = "evals"
    verbose_name = "Failure cases and evaluations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from studio import sweeping

        from . import signals  # noqa: F401  (deleting a conversation takes its private cases)
        from .services import jobs_sweep

        sweeping.register(jobs_sweep)  # evaluations and imports whose job worker died or never got them

from django.apps import AppConfig

from studio import sweeping


class OptimiserConfig(AppConfig):
    name = "optimiser"
    verbose_name = "Prompt optimiser"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Django's app registry is not ready when this module loads: services imports models
        from .services import jobs_sweep  # noqa: PLC0415

        sweeping.register(jobs_sweep)  # optimisations whose job worker died or never got them

from django.apps import AppConfig

from studio import sweeping


class EvalsConfig(AppConfig):
    name = "evals"
    verbose_name = "Failure cases and evaluations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Django's app registry is not ready when this module loads: these import models
        from prompts import examples  # noqa: PLC0415

        from . import signals  # noqa: F401, PLC0415 - deleting a conversation takes its private cases
        from .nearest_examples import NearestExamples  # noqa: PLC0415
        from .services import jobs_sweep  # noqa: PLC0415

        sweeping.register(jobs_sweep)  # evaluations and imports whose job worker died or never got them

        # Examples chosen per input are a prompt version's, answered in chat and prompts, which may not
        # import evals (tests/test_architecture.py): evals hands them its case lookup instead.
        examples.register_provider(NearestExamples())

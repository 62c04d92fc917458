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

        from prompts import examples

        from .nearest_examples import NearestExamples

        # Examples chosen per input are a prompt version's, answered in chat and prompts, which may not
        # import evals (tests/test_architecture.py): evals hands them its case lookup instead.
        examples.register_provider(NearestExamples())

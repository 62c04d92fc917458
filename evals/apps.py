from django.apps import AppConfig

from studio import sweeping


class EvalsConfig(AppConfig):
    name = "evals"
    verbose_name = "Failure cases and evaluations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Django's app registry is not ready when this module loads: these import models
        from knowledge import retrieval_tests  # noqa: PLC0415
        from prompts import examples  # noqa: PLC0415

        from . import signals  # noqa: F401, PLC0415 - deleting a conversation takes its private cases
        from .nearest_examples import NearestExamples  # noqa: PLC0415
        from .services import jobs_sweep  # noqa: PLC0415

        sweeping.register(jobs_sweep)  # evaluations and imports whose job worker died or never got them

        # Examples chosen per input are a prompt version's, answered in chat and prompts, which may not
        # import evals (tests/test_architecture.py): evals hands them its case lookup instead.
        examples.register_provider(NearestExamples())
        # "Use judged cases as a retrieval test" is the knowledge base's, and knowledge may not import
        # evals either: evals hands over its builder.
        from .retrieval_tests import retrieval_test_from_cases  # noqa: PLC0415

        retrieval_tests.register_case_source(retrieval_test_from_cases)

"""No model worker answers: the evaluation fails with the reason and leaves nothing queued."""

import pytest

from chat.models import Conversation, Message
from evals import services
from evals.runner import run_evaluation

pytestmark = pytest.mark.django_db(transaction=True)


def test_without_a_model_worker_the_evaluation_fails_saying_so(alice, order_version, make_cases, settings):
    settings.LLM_QUEUE_TIMEOUT_SECONDS = 1
    make_cases(2)
    evaluation = services.evaluation_create(
        user=alice, version=order_version, model_name="", filters={}, scorers=[{"type": "exact_match"}]
    )
    from studio import sweeping

    stop = sweeping.start_thread(0.2)  # the job worker's sweeper fails the replies no worker took
    try:
        run_evaluation(evaluation.pk)
    finally:
        stop.set()
    evaluation.refresh_from_db()
    assert evaluation.status == "failed" and "No model worker is running" in evaluation.error
    assert not Message.objects.filter(status__in=Message.IN_PROGRESS).exists()
    assert not Conversation.objects.filter(kind="evaluation").exists()

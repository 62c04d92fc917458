"""A studio upgraded in place: replies stored before monitoring existed are counted by its
migration (monitoring/0002), in batches, equal to a scan; a later event of an old reply moves the
sums as for a new one."""

import importlib
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from chat.models import Message
from chat.services import reply_feedback
from monitoring.models import CountedReply, ReplyRollup

from . import scenario
from .scenario import NOW

pytestmark = pytest.mark.django_db(transaction=True)


def migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)


def test_replies_stored_before_monitoring_are_counted_by_its_migration(alice):
    migrate([("monitoring", None)])
    try:
        # The studio before monitoring: nothing follows the replies.
        with mock.patch("monitoring.receivers.reply_rollup_sync"):
            prompt, scores = scenario.build(online_scores=False)
        backfill = importlib.import_module("monitoring.migrations.0002_backfill_rollups")
        with mock.patch.object(backfill, "BATCH", 7):  # several batches
            migrate([("monitoring", "0002_backfill_rollups")])
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    assert ReplyRollup.objects.exists()
    found = scenario.compared(prompt, scores, NOW - timedelta(days=30), NOW)
    scenario.same(found["rollups"], found["scan"])
    assert found["rollups"]["requests"] == 22
    # An old reply's thumbs change moves its rollup by the difference.
    old = Message.objects.filter(conversation__prompt_version__prompt=prompt, feedback="up").earliest("pk")
    assert CountedReply.objects.filter(message=old).exists()
    reply_feedback(message=old, value="down")
    found = scenario.compared(prompt, scores, NOW - timedelta(days=30), NOW)
    scenario.same(found["rollups"], found["scan"])

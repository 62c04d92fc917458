"""The rollups equal a scan of the stored replies on PostgreSQL too (scaled mode): the same scenario
as test_rollups.py, run by a `manage.py shell` of a scaled studio; writers at once on their own
connections (row locks and ON CONFLICT on a real server); the backfill migration over replies
stored before monitoring existed."""

import json

import pytest

from benchmarks.processes import manage
from tests.scaled import drop_database, scaled_studio_env

from . import scenario

pytestmark = pytest.mark.scaled

BACKFILLED = """
import importlib, json
from datetime import timedelta
from unittest import mock
from django.core.management import call_command
from monitoring.tests import scenario
call_command("migrate", "monitoring", "zero", verbosity=0)
with mock.patch("monitoring.receivers.reply_rollup_sync"):  # the studio before monitoring
    prompt, scores = scenario.build(online_scores=False, slug="legacy")
backfill = importlib.import_module("monitoring.migrations.0002_backfill_rollups")
with mock.patch.object(backfill, "BATCH", 7):
    call_command("migrate", "monitoring", verbosity=0)
print("RESULT", json.dumps(scenario.compared(prompt, scores, scenario.NOW - timedelta(days=30), scenario.NOW)))
"""
LIVE = """
import json
from datetime import timedelta
from monitoring.tests import scenario
prompt, scores = scenario.build()
found = {
    "week": scenario.compared(prompt, scores, scenario.NOW - timedelta(days=7), scenario.NOW),
    "month": scenario.compared(prompt, scores, scenario.NOW - timedelta(days=30), scenario.NOW),
    "version 2": scenario.compared(prompt, scores, scenario.NOW - timedelta(days=30), scenario.NOW, version=2),
    "label none": scenario.compared(prompt, scores, scenario.NOW - timedelta(days=30), scenario.NOW, label=""),
}
found["concurrent"] = scenario.finish_concurrently(prompt, threads=8, each=20)
found["after"] = scenario.compared(prompt, scores, scenario.NOW - timedelta(days=7), scenario.NOW)
print("RESULT", json.dumps(found))
"""


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    env, name = scaled_studio_env(tmp_path_factory.mktemp("monitoring-scaled"))
    try:
        manage(["migrate", "--verbosity", "0"], env, timeout=600)
        yield env
    finally:
        drop_database(name)


def shell(env, script) -> dict:
    output = manage(["shell", "-c", script], env, timeout=600)
    return json.loads(output.split("RESULT ", 1)[1])


def test_the_backfill_counts_replies_stored_before_monitoring(database):
    found = shell(database, BACKFILLED)
    scenario.same(found["rollups"], found["scan"])
    assert found["rollups"]["requests"] == 22


def test_the_rollups_equal_a_scan_and_writers_at_once_lose_no_count(database):
    found = shell(database, LIVE)
    for name in ("week", "month", "version 2", "label none", "after"):
        scenario.same(found[name]["rollups"], found[name]["scan"], name)
    assert found["week"]["rollups"]["requests"] == 21 and found["month"]["rollups"]["requests"] == 22
    assert found["after"]["rollups"]["requests"] == 21 + found["concurrent"] == 21 + 160
    assert found["after"]["rollups"]["online_scores"]["judge"] == {"mean": 0.7667, "n": 3, "errors": 1}

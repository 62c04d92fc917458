"""Two reviewers at once on PostgreSQL (scaled mode), where transactions run side by side: the
item's row lock makes one review win and the other be told, for every one of 20 items raced; and a
thumbs down and a low score landing the same reply at once make one item, with both.
(On SQLite the studio's transactions take the write lock when they begin: test_two_reviewers_at_once.)"""

import json

import pytest

from benchmarks.processes import manage
from tests.scaled import drop_database, scaled_studio_env

pytestmark = pytest.mark.scaled

RACE = """
import json, threading
from django.contrib.auth.models import User
from django.db import connection
from chat.models import Conversation, Message
from chat.services import message_append
from evals.models import FailureCase
from prompts.services import prompt_create
from review import services
from review.models import Review, ReviewItem

alice = User.objects.create_user("alice")
dave = User.objects.create_user("dave")
fields = {"instructions": "Answer in one line.", "template": "Question: {{ question }}"}
prompt = prompt_create(owner=alice, name="Support", slug="support", version=fields)
prompt.editors.add(dave)
version = prompt.versions.get()
items = []
for n in range(20):
    conversation = Conversation.objects.create(
        owner=alice, kind="api", prompt_version=version, prompt_variables={"question": f"Q{n}"}
    )
    message_append(conversation=conversation, role="user", content=f"Question: Q{n}")
    reply = message_append(conversation=conversation, role="assistant", content="?", status="complete")
    item = services.item_add(message_id=reply.pk, reason="picked")
    ReviewItem.objects.filter(pk=item.pk).update(needs=1)
    items.append(item.pk)

outcomes = {"won": 0, "told": 0, "other": []}
lock = threading.Lock()

def review(user, item_id, barrier):
    try:
        barrier.wait(timeout=30)
        services.item_review(item=ReviewItem.objects.get(pk=item_id), user=user, verdict="expected",
                             expected=f"from {user.username}")
        with lock:
            outcomes["won"] += 1
    except services.ReviewConflict:
        with lock:
            outcomes["told"] += 1
    except Exception as exc:
        with lock:
            outcomes["other"].append(repr(exc))
    finally:
        connection.close()

for item_id in items:
    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=review, args=(user, item_id, barrier)) for user in (alice, dave)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
print("RESULT", json.dumps({
    **outcomes,
    "reviews": Review.objects.count(),
    "cases": FailureCase.objects.filter(source="production").count(),
    "corrected": ReviewItem.objects.filter(status="corrected", reviewed=1).count(),
}))
"""
LANDING = """
import json, threading
from django.contrib.auth.models import User
from django.db import connection
from chat.models import Conversation
from chat.services import message_append
from prompts.services import prompt_create
from review import services
from review.models import ReviewItem

alice = User.objects.create_user("erin")
fields = {"instructions": "Answer in one line.", "template": "Question: {{ question }}"}
version = prompt_create(owner=alice, name="Landing", slug="landing", version=fields).versions.get()
failures = []

def land(send, barrier):
    try:
        barrier.wait(timeout=30)
        send()
    except Exception as exc:
        failures.append(repr(exc))
    finally:
        connection.close()

for n in range(20):
    conversation = Conversation.objects.create(owner=alice, kind="api", prompt_version=version)
    message_append(conversation=conversation, role="user", content=f"Question: Q{n}")
    reply = message_append(conversation=conversation, role="assistant", content="?", status="complete")
    barrier = threading.Barrier(2)
    sends = (
        lambda: services.item_add(message_id=reply.pk, reason="thumbs_down"),
        lambda: services.reply_scored(message_id=reply.pk, scores={"llm_judge": 0.1}, below_threshold=True),
    )
    threads = [threading.Thread(target=land, args=(send, barrier)) for send in sends]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
items = ReviewItem.objects.filter(prompt__slug="landing")
print("RESULT", json.dumps({
    "failures": failures,
    "items": items.count(),
    "scored": items.filter(scores={"llm_judge": 0.1}, judge_below=True).count(),
}))
"""


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    env, name = scaled_studio_env(tmp_path_factory.mktemp("review-scaled"))
    try:
        manage(["migrate", "--verbosity", "0"], env, timeout=600)
        yield env
    finally:
        drop_database(name)


def test_one_review_of_each_raced_item_wins_and_the_other_is_told(database):
    output = manage(["shell", "-c", RACE], database, timeout=600)
    found = json.loads(output.split("RESULT ", 1)[1])
    assert found == {"won": 20, "told": 20, "other": [], "reviews": 20, "cases": 20, "corrected": 20}


def test_a_reply_landed_twice_at_once_is_one_item_with_both(database):
    output = manage(["shell", "-c", LANDING], database, timeout=600)
    found = json.loads(output.split("RESULT ", 1)[1])
    assert found == {"failures": [], "items": 20, "scored": 20}

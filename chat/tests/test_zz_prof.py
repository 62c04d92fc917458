import time, pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from chat.models import Conversation, Message
from chat.search import conversations_search
pytestmark = pytest.mark.django_db

def test_prof(alice, bob):
    cs = Conversation.objects.bulk_create([Conversation(owner=alice if i % 2 else bob, title=f"chat {i}") for i in range(10000)], batch_size=1000)
    words = "the quick brown fox jumps over the lazy dog and then some more text about trains and lisbon".split()
    msgs = [Message(conversation=c, role="user", content=" ".join(words[(j+k) % len(words)] for k in range(30)) + (f" rareword{c.pk}" if c.pk % 500 == 0 else "")) for c in cs for j in range(5)]
    Message.objects.bulk_create(msgs, batch_size=2000)
    for q in ["rareword500", "the", "quick brown", "lis", "zzz"]:
        for _ in range(2):
            with CaptureQueriesContext(connection) as cq:
                t=time.perf_counter(); hits = conversations_search(user=alice, query=q); d=time.perf_counter()-t
        print(q, len(hits), f"{d*1000:.1f} ms", [x['time'] for x in cq.captured_queries])
    sql = cq.captured_queries[0]['sql']
    print(sql[:2000])

import json, time, cProfile, pstats
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from chat import exchange

pytestmark = pytest.mark.django_db

def test_perf(alice):
    messages = [{"id": n, "parent": n - 1 if n > 1 else None, "role": "user" if n % 2 else "assistant",
                 "content": "hello " * 50, "created_at": "2024-01-01T00:00:00Z"} for n in range(1, 10_001)]
    doc = {"format": "chat-prompt-studio.conversation", "version": 1, "title": "Long", "messages": messages,
           "active_path": list(range(1, 10_001))}
    raw = json.dumps(doc).encode()
    pr = cProfile.Profile(); pr.enable()
    exchange.conversations_import(owner=alice, upload=SimpleUploadedFile("a.json", raw))
    pr.disable()
    pstats.Stats(pr).sort_stats("cumulative").print_stats(25)

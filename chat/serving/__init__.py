"""Serving: how queued replies reach a model and come back. The queue and its leases
(`queue.py`), the model worker (`worker.py`), the models served (`registry.py`), the
OpenAI-compatible API (`openai_api.py`) and the wake-ups for workers (`wakeups.py`).

Conversations (chat/services.py, chat/selectors.py) queue a reply by storing a row; everything
after that, up to the stored final reply, is here.
"""

import asyncio
import contextlib
import json

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from chat.serving.worker import GenerationWorker
from studio.asgi import application


@pytest.fixture
def new_conversation():
    """await new_conversation(owner, **fields): a conversation stored as the chat page makes one."""
    from channels.db import database_sync_to_async

    from chat.services import conversation_create

    return database_sync_to_async(lambda owner, **kwargs: conversation_create(owner=owner, **kwargs))


@pytest.fixture
def stored_messages():
    """await stored_messages(conversation): its messages as stored, the fields the tests read."""
    from channels.db import database_sync_to_async

    from chat.models import Message

    return database_sync_to_async(
        lambda conversation: list(
            Message.objects.filter(conversation=conversation).values(
                "role", "content", "status", "error", "completion_tokens", "tokens_per_s", "model_name"
            )
        )
    )


@pytest.fixture
async def channel_layer():
    layer = get_channel_layer()
    await layer.flush()
    yield layer
    await layer.flush()


@pytest.fixture
async def start_worker(tiny_model, channel_layer):
    """Start real model workers (tiny model unless `load` says otherwise) in the test's loop;
    they read the settings as they are when started."""
    tasks = []

    async def start(load=None):
        model_worker = GenerationWorker(load=load or (lambda: tiny_model), channel_layer=channel_layer)
        tasks.append(asyncio.create_task(model_worker.run()))
        await model_worker.ready.wait()
        return model_worker

    yield start
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def worker(start_worker):
    return await start_worker()


class ChatClient:
    """A WebSocket client of the chat protocol, over channels' in-process communicator."""

    def __init__(self, user, conversation_id):
        self.communicator = WebsocketCommunicator(
            application,
            f"/ws/chat/{conversation_id}/",
            headers=[(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")],
        )
        self.communicator.scope["user"] = user

    async def connect(self):
        connected, code = await self.communicator.connect()
        assert connected, code
        return self

    async def send(self, frame):
        await self.communicator.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))

    async def receive(self, timeout=10):
        output = await self.communicator.receive_output(timeout)
        if output["type"] == "websocket.close":
            return {"type": "closed", "code": output.get("code")}
        return json.loads(output["text"])

    async def receive_until(self, frame_type, timeout=20, **match):
        """Frames up to and including the first `frame_type` frame that matches."""
        frames = []
        while True:
            frame = await self.receive(timeout)
            frames.append(frame)
            if frame["type"] == frame_type and all(frame.get(k) == v for k, v in match.items()):
                return frames

    async def close(self):
        await self.communicator.disconnect()


@pytest.fixture
def chat_client():
    clients = []

    async def connect(user, conversation_id):
        client = await ChatClient(user, conversation_id).connect()
        clients.append(client)
        return client

    yield connect

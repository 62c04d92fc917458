"""The whole path through a real daphne server, with a real WebSocket client (embedded mode)."""

import pytest

from benchmarks.processes import frames_until, manage, next_frame, open_chat_socket, running_studio, studio_env
from tests.settings import TINY_MODEL_DIR

pytestmark = pytest.mark.slow  # starts a studio

ADMIN_PASSWORD = "admin-password-1"


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("e2e-data")
    env = studio_env(
        STUDIO_DATA_DIR=data_dir,
        LLM_MODEL=TINY_MODEL_DIR,
        LLM_EMBEDDED_WORKER="true",
        LLM_TEMPERATURE=0,
        LLM_MAX_NEW_TOKENS=64,
        STUDIO_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    with running_studio(env, data_dir / "logs") as server:
        manage(
            [
                "shell",
                "-c",
                "from django.contrib.auth.models import User; "
                "User.objects.create_user('bob', password='bob-password-1')",
            ],
            env,
        )
        yield server


async def test_a_reply_streams_through_daphne_and_is_stored(studio):
    session = studio.login("admin", ADMIN_PASSWORD)
    conversation_id = session.new_conversation()
    socket = await open_chat_socket(studio, session, conversation_id)
    await socket.send('{"type": "send", "content": "Hello from a real socket"}')
    frames = await frames_until(socket, "done")
    tokens = [f["text"] for f in frames if f["type"] == "token"]
    assert len(tokens) >= 2 and frames[-1]["status"] == "complete"
    assert frames[-1]["usage"]["completion_tokens"] == 64
    await socket.close()

    # A new socket (a reload) gets the stored conversation back.
    socket = await open_chat_socket(studio, session, conversation_id)
    user_frame, assistant_frame = await next_frame(socket), await next_frame(socket)
    assert user_frame["message"]["content"] == "Hello from a real socket"
    assert assistant_frame["message"]["content"] == "".join(tokens)
    assert assistant_frame["message"]["status"] == "complete"
    await socket.close()

    status, page, _ = session.get(f"/chat/{conversation_id}/")
    assert status == 200 and "Hello from a real socket" in page


async def test_it_refuses_a_socket_without_login(studio):
    session = studio.login("admin", ADMIN_PASSWORD)
    conversation_id = session.new_conversation()
    socket = await open_chat_socket(studio, None, conversation_id)
    await socket.wait_closed()
    assert socket.close_code == 4401


async def test_it_refuses_someone_elses_conversation(studio):
    conversation_id = studio.login("admin", ADMIN_PASSWORD).new_conversation()
    bob = studio.login("bob", "bob-password-1")
    socket = await open_chat_socket(studio, bob, conversation_id)
    await socket.wait_closed()
    assert socket.close_code == 4403
    status, _, _ = bob.get(f"/chat/{conversation_id}/")
    assert status == 404


async def test_it_refuses_a_foreign_origin(studio):
    from websockets.exceptions import InvalidStatus

    session = studio.login("admin", ADMIN_PASSWORD)
    conversation_id = session.new_conversation()
    with pytest.raises(InvalidStatus) as refused:
        await open_chat_socket(studio, session, conversation_id, origin="http://evil.example")
    assert refused.value.response.status_code == 403

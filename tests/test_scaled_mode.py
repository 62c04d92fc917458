"""Scaled mode: PostgreSQL, Redis channel layer, standalone `llm_worker` processes.

Runs against the PostgreSQL (127.0.0.1:5432, trust) and Redis (127.0.0.1:6379) that this
machine and CI run; skips, saying why, only where they are not reachable.
"""

import asyncio

import pytest

from benchmarks.processes import frames_until, manage, next_frame, open_chat_socket, running_studio, studio_env
from tests.scaled import ADMIN_PASSWORD, query, wait_for_workers, wait_until
from tests.settings import TINY_MODEL_DIR

pytestmark = pytest.mark.scaled


async def test_several_workers_compete_for_requests(scaled_env, tmp_path):
    env, database = scaled_env
    # Two replies per worker at most: on a loaded machine the first worker awake could otherwise
    # take all four into its batch before the other looks.
    env = {**env, "LLM_MAX_NEW_TOKENS": "400", "LLM_MAX_BATCH": "2"}
    with running_studio(env, tmp_path, workers=2) as studio:
        await wait_for_workers(database, 2)
        session = studio.login("admin", ADMIN_PASSWORD)
        conversations = [session.new_conversation() for _ in range(4)]
        sockets = [await open_chat_socket(studio, session, c) for c in conversations]
        for chat_socket in sockets:
            await chat_socket.send('{"type": "send", "content": "Hello, scaled world"}')
        results = await asyncio.gather(*(frames_until(s, "done", timeout=120) for s in sockets))
        assert [frames[-1]["status"] for frames in results] == ["complete"] * 4
        for chat_socket in sockets:
            await chat_socket.close()

    rows = query(
        database, "SELECT status, worker_channel, completion_tokens FROM chat_message WHERE role = 'assistant'"
    )
    assert len(rows) == 4 and all(status == "complete" and tokens == 400 for status, _, tokens in rows)
    assert len({channel for _, channel, _ in rows}) == 2, "both workers took requests"


async def test_an_idle_worker_and_socket_still_answer_after_a_quiet_spell(scaled_env, tmp_path):
    """Nobody sends for a while: the worker and the open socket wait on Redis and must not time out.

    redis-py 8 ended such blocking reads after 5 s and killed both (redis/redis-py#4091).
    """
    env, database = scaled_env
    with running_studio(env, tmp_path, workers=1) as studio:
        await wait_for_workers(database, 1)
        session = studio.login("admin", ADMIN_PASSWORD)
        chat_socket = await open_chat_socket(studio, session, session.new_conversation())
        # Until a connection waiting in blocking reads has lived 8 s, longer than the 5 s after which
        # redis-py 8 dropped it (it would then reconnect: a young connection): Redis says how old.
        await wait_until(
            lambda: blocking_connection_older_than(env["REDIS_URL"], 8.0),
            timeout=90,
            what="a blocking-read connection 8 s old",
        )
        assert studio.workers[0].poll() is None, "the idle worker is still running"
        await chat_socket.send('{"type": "send", "content": "Still there?"}')
        frames = await frames_until(chat_socket, "done", timeout=60)
        assert frames[-1]["status"] == "complete"
        await chat_socket.close()


async def test_a_worker_killed_mid_reply_leaves_the_reply_failed_with_a_message(scaled_env, tmp_path):
    env, database = scaled_env
    env = {**env, "LLM_MAX_NEW_TOKENS": "20000"}  # still writing when it is killed
    with running_studio(env, tmp_path, workers=1) as studio:
        await wait_for_workers(database, 1)
        session = studio.login("admin", ADMIN_PASSWORD)
        conversation_id = session.new_conversation()
        chat_socket = await open_chat_socket(studio, session, conversation_id)
        await chat_socket.send('{"type": "send", "content": "Keep talking"}')
        seen = ""
        for _ in range(10):  # well into the reply: several chunks streamed and stored
            seen += "".join(f.get("text", "") for f in await frames_until(chat_socket, "token"))
        studio.workers[0].kill()  # SIGKILL: no chance to say goodbye

        # The lease (2 s here) ends the wait, not a spinner forever: the done frame comes.
        frames = await frames_until(chat_socket, "done", timeout=60)
        seen += "".join(f["text"] for f in frames if f["type"] == "token")
        done = frames[-1]
        assert done["status"] == "failed"
        assert "model worker stopped" in done["error"]
        await chat_socket.close()

        # A reload shows the failed reply, its partial text and the reason.
        chat_socket = await open_chat_socket(studio, session, conversation_id)
        await next_frame(chat_socket)
        reply = (await next_frame(chat_socket))["message"]
        assert reply["status"] == "failed" and "model worker stopped" in reply["error"]
        assert reply["content"], "the text written before the crash is kept"
        # Every chunk is stored before it is sent: the tab saw nothing the database lacks.
        stored = reply["content"]
        assert stored.startswith(seen), {  # where they part, should this ever fail again
            "stored": len(stored),
            "seen": len(seen),
            "first difference": next((i for i, (a, b) in enumerate(zip(stored, seen)) if a != b), None),
        }
        await chat_socket.close()


def test_llm_worker_refuses_to_run_without_redis(tmp_path):
    env = studio_env(STUDIO_DATA_DIR=tmp_path, LLM_MODEL=TINY_MODEL_DIR)
    env.pop("REDIS_URL", None)
    with pytest.raises(RuntimeError, match="llm_worker needs REDIS_URL"):
        manage(["llm_worker"], env)


PROMPT = """
from django.contrib.auth.models import User
from prompts.services import prompt_create
prompt_create(owner=User.objects.get(username="admin"), name="Notes", slug="notes",
              version={"instructions": "Summarise.", "template": "{{ text }}"})
"""


async def test_the_web_process_holds_no_model_code(scaled_env, tmp_path):
    """In scaled mode daphne serves every page, the API and the playground's token counts without
    importing torch or transformers (workers hold the model)."""
    env, database = scaled_env
    with running_studio(env, tmp_path, workers=1) as studio:
        await wait_for_workers(database, 1)
        manage(["shell", "-c", PROMPT], env)
        session = studio.login("admin", ADMIN_PASSWORD)
        conversation_id = session.new_conversation()
        for path in [
            "/chat/",
            f"/chat/{conversation_id}/",
            "/chat/model-status/",
            "/prompts/",
            "/prompts/notes/",
            "/prompts/notes/playground/",
            "/cases/",
            "/evaluations/",
            "/evaluations/new/",
            "/fine-tunes/",
            "/fine-tunes/new/",
        ]:
            assert session.get(path)[0] == 200, path
        status, body, _ = session.post("/prompts/notes/playground/preview/", {"var_text": "We ship on Friday."})
        assert status == 200 and "tokens" in body
        chat_socket = await open_chat_socket(studio, session, conversation_id)
        await chat_socket.send('{"type": "send", "content": "Hello"}')
        assert (await frames_until(chat_socket, "done"))[-1]["status"] == "complete"
        await chat_socket.close()

        maps = open(f"/proc/{studio.server.pid}/maps").read()
        assert "libtorch" not in maps and "/torch/" not in maps, "the web process loaded torch"
        worker_maps = open(f"/proc/{studio.workers[0].pid}/maps").read()
        assert "libtorch" in worker_maps  # the check can see torch where it is


def blocking_connection_older_than(redis_url: str, seconds: float) -> bool:
    """Whether a client of this Redis that waits in blocking reads has been connected over `seconds`."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return any(
            entry.get("cmd", "").startswith(("bzpopmin", "blpop", "brpop", "bzmpop"))
            and int(entry.get("age", 0)) > seconds
            for entry in client.client_list()
        )
    finally:
        client.close()

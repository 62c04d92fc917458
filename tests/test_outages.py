"""Scaled mode through a Redis restart: a Redis server this test starts itself (never the
machine's shared one) is killed and started again while one worker writes a reply and another
idles. The workers ride it out, the reply being written is finished and stored, a request made
while Redis was down is answered, and new chats work afterwards."""

import asyncio
import shutil
import subprocess
import threading
import time

import openai
import pytest

from benchmarks.processes import die_with_parent, frames_until, free_port, open_chat_socket, running_studio, shell_token
from tests.needs import missing
from tests.scaled import ADMIN_PASSWORD, TOKEN, drop_database, query, scaled_studio_env, wait_for_workers, wait_until

pytestmark = pytest.mark.scaled


class PrivateRedis:
    def __init__(self, port: int, folder):
        self.port, self.folder, self.process = port, folder, None

    def start(self):
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + 10
        while (
            subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True).stdout.strip()
            != "PONG"
        ):
            assert time.monotonic() < deadline, "the private Redis did not start"
            time.sleep(0.1)

    def kill(self):
        self.process.kill()
        self.process.wait()


@pytest.fixture
def private_redis(tmp_path):
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        missing("Redis restart test: redis-server is not installed")
    redis = PrivateRedis(free_port(), tmp_path)
    redis.start()
    yield redis
    redis.kill()


@pytest.fixture
def outage_env(private_redis, tmp_path):
    env, database = scaled_studio_env(tmp_path / "data")
    env.update(
        REDIS_URL=f"redis://127.0.0.1:{private_redis.port}/0",
        LLM_QUEUE_POLL_SECONDS="0.5",
        LLM_MAX_NEW_TOKENS="1500",
        LLM_MAX_BATCH="2",
    )
    yield env, database
    drop_database(database)


async def test_workers_ride_out_a_redis_restart_and_no_reply_is_lost_or_stuck(outage_env, private_redis, tmp_path):
    env, database = outage_env
    with running_studio(env, tmp_path / "logs", workers=2) as studio:
        await wait_for_workers(database, 2)
        token = shell_token(TOKEN, env)
        session = studio.login("admin", ADMIN_PASSWORD)
        conversation_id = session.new_conversation()
        chat_socket = await open_chat_socket(studio, session, conversation_id)
        await chat_socket.send('{"type": "send", "content": "Keep talking through the outage"}')
        await frames_until(chat_socket, "token")

        private_redis.kill()
        # Asked while Redis is down: stored as a queued row; its wake-up cannot be sent.
        answer = {}
        client = openai.OpenAI(base_url=studio.base_url + "/v1", api_key=token, max_retries=0, timeout=120)
        asking = threading.Thread(
            target=lambda: answer.update(
                reply=client.chat.completions.create(
                    model="tiny-llama-v2", max_tokens=30, messages=[{"role": "user", "content": "Asked in the outage"}]
                )
            )
        )
        asking.start()
        # Until the request is stored as a queued reply (its wake-up could not be sent), then Redis is back.
        await wait_until(
            lambda: (
                query(
                    database,
                    "SELECT count(*) FROM chat_message m JOIN chat_conversation c ON "
                    "c.id = m.conversation_id WHERE c.kind = 'api' AND m.role = 'assistant'",
                )[0][0]
                >= 1
            ),
            timeout=60,
            what="the request stored while Redis was down",
        )
        private_redis.start()

        asking.join(90)
        assert "reply" in answer, "the request made during the outage was answered"
        completion = answer["reply"]
        assert completion.usage.completion_tokens == 30 and completion.choices[0].message.content

        deadline = time.monotonic() + 90
        while (
            query(
                database,
                "SELECT count(*) FROM chat_message WHERE role = 'assistant' AND status IN ('queued', 'streaming')",
            )[0][0]
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.5)
        rows = query(
            database,
            "SELECT m.status, m.completion_tokens, m.content, c.kind FROM chat_message m JOIN "
            "chat_conversation c ON c.id = m.conversation_id WHERE m.role = 'assistant' ORDER BY m.id",
        )
        assert [(status, kind) for status, _, _, kind in rows] == [("complete", "chat"), ("complete", "api")]
        assert rows[0][1] == 1500, "the reply being written through the outage was finished"
        assert rows[1][2] == completion.choices[0].message.content
        assert [worker.poll() for worker in studio.workers] == [None, None], "both workers are still running"

        # After the restart, a new chat works as before.
        chat_socket = await open_chat_socket(studio, session, session.new_conversation())
        await chat_socket.send('{"type": "send", "content": "And now?"}')
        assert (await frames_until(chat_socket, "done", timeout=60))[-1]["status"] == "complete"
        await chat_socket.close()

"""On PostgreSQL (which refuses NUL bytes and cannot encode lone surrogates), every form, API
body, import and chat frame that carries them gets a clear 400 or error frame: never a 500 or a
socket closed with 1011. Real daphne, real PostgreSQL and Redis."""

import json

import pytest

from benchmarks.processes import manage, next_frame, open_chat_socket, running_studio
from tests.scaled import ADMIN_PASSWORD

pytestmark = pytest.mark.scaled
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def studio(scaled_env, tmp_path_factory):
    env, _ = scaled_env
    with running_studio(env, tmp_path_factory.mktemp("odd-input-logs")) as server:
        output = manage(
            [
                "shell",
                "-c",
                "from django.contrib.auth.models import User; "
                "from accounts.services import api_token_create; "
                "print('TOKEN', api_token_create(user=User.objects.get(username='admin'), "
                "name='app')[1])",
            ],
            env,
        )
        server.api_token = output.split("TOKEN ")[1].split()[0]
        yield server


def multipart(filename: str, content: bytes) -> tuple[bytes, dict]:
    body = (
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename.encode()
        + b'"\r\nContent-Type: application/json\r\n\r\n'
        + content
        + b"\r\n--x--\r\n"
    )
    return body, {"Content-Type": "multipart/form-data; boundary=x"}


def test_forms_with_a_nul_byte_get_a_400_that_names_the_field(studio):
    session = studio.login("admin", ADMIN_PASSWORD)
    conversation_id = session.new_conversation()
    for path, body in (
        ("/prompts/new/", b"name=a%00b&slug=ab&template=x"),
        (f"/chat/{conversation_id}/rename/", b"title=trip%00"),
        (f"/chat/{conversation_id}/system-prompt/", b"system_prompt=be%00brief"),
        ("/accounts/settings/tokens/", b"name=bot%00"),
        ("/prompts/?label=x%00", b""),
    ):
        status, page, headers = session.request("POST" if body else "GET", path, body, FORM)
        assert status == 400, (path, status)
        assert "NUL" in headers.get("X-Studio-Error", ""), path


def test_json_bodies_with_nul_surrogates_deep_nesting_or_wrong_types_get_a_400(studio):
    session = studio.login("admin", ADMIN_PASSWORD)
    session.post("/prompts/new/", {"name": "Notes", "slug": "notes", "template": "{{ text }}"})
    api = {"Authorization": f"Bearer {studio.api_token}", "Content-Type": "application/json"}
    for body, expected in (
        (b'{"variables": {"text": "a\\u0000b"}}', "NUL"),
        (b'{"variables": {"text": "\\ud800"}}', "surrogate"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"version": [1], "variables": {"text": "x"}}', "number"),
        (b'{"label": "prod\\u0000", "variables": {"text": "x"}}', "NUL"),
    ):
        status, answer, _ = session.request("POST", "/api/prompts/notes/render/", body, api)
        assert status == 400 and expected in json.loads(answer)["error"], (body[:40], status, answer[:200])


def test_an_import_with_nul_or_surrogates_is_refused_and_imports_nothing(studio):
    session = studio.login("admin", ADMIN_PASSWORD)
    exported = {
        "format": "chat-prompt-studio/prompt",
        "format_version": 1,
        "prompt": {"name": "Imported\u0000", "slug": "imported"},
        "versions": [{"number": 1, "template": "{{ x }}", "author": "a", "created_at": "2024-01-01T00:00:00Z"}],
    }
    for content in (json.dumps(exported).encode(), json.dumps(exported).replace("\\u0000", "\\udc00").encode()):
        status, page, _ = session.request("POST", "/prompts/import/", *multipart("p.json", content))
        assert status == 400 and "Nothing was imported" in page
    assert session.get("/prompts/imported/")[0] == 404


async def test_chat_frames_with_nul_surrogates_or_deep_json_get_an_error_frame_on_an_open_socket(studio):
    session = studio.login("admin", ADMIN_PASSWORD)
    conversation_id = session.new_conversation()
    chat_socket = await open_chat_socket(studio, session, conversation_id)
    for frame, expected in (
        ('{"type": "send", "content": "a\\u0000b"}', "NUL"),
        ('{"type": "send", "content": "\\ud800"}', "surrogate"),
        ('{"type": "send", "content": ' + "[" * 30_000 + "]" * 30_000 + "}", "nested too deeply"),
    ):
        await chat_socket.send(frame)
        answer = await next_frame(chat_socket)
        assert answer["type"] == "error" and expected in answer["error"]
    await chat_socket.send('{"type": "stop"}')
    assert (await next_frame(chat_socket))["type"] == "error"  # still open and answering
    await chat_socket.close()


def test_the_server_logged_no_error(studio):
    log = (studio.log_dir / "server.log").read_text()
    assert "Traceback" not in log and " 500 " not in log

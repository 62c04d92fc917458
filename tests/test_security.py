"""Headers, origins, error pages, deployment settings, and the upgrade path for stored prompts."""

import os
import subprocess
import sys

import pytest
from channels.testing import WebsocketCommunicator

from benchmarks.processes import REPO
from studio.asgi import application


@pytest.mark.django_db
def test_every_page_carries_a_content_security_policy_without_inline_script(client, alice):
    client.force_login(alice)
    for url in ("/chat/", "/prompts/", "/accounts/settings/", "/accounts/login/", "/no-such-page/"):
        policy = client.get(url)["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
        assert "frame-ancestors 'none'" in policy


def test_no_template_has_inline_script_or_handlers():
    templates = REPO / "studio" / "templates"
    for path in templates.rglob("*.html"):
        html = path.read_text()
        for forbidden in ("onclick=", "onchange=", "onsubmit=", "oninput=", "javascript:", "hx-on"):
            assert forbidden not in html, f"{path.name} has {forbidden}"
        for script in html.split("<script")[1:]:
            assert "src=" in script.split(">")[0], f"{path.name} has an inline <script>"


async def socket_answer(origin: bytes, host: bytes, scheme="ws"):
    communicator = WebsocketCommunicator(application, "/ws/chat/1/", headers=[(b"origin", origin), (b"host", host)])
    communicator.scope["scheme"] = scheme
    connected, _ = await communicator.connect()
    await communicator.disconnect()
    return connected


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "origin, host, allowed",
    [
        (b"http://localhost:8000", b"localhost:8000", True),
        (b"http://localhost:3000", b"localhost:8000", False),  # the finding: another port on the same machine
        (b"https://localhost:8000", b"localhost:8000", False),  # another scheme
        (b"http://evil.example", b"localhost:8000", False),
        (b"http://evil.example:8000", b"evil.example:8000", False),  # a host not in ALLOWED_HOSTS
        (b"null", b"localhost:8000", False),
    ],
)
async def test_the_socket_origin_must_match_scheme_host_and_port(origin, host, allowed):
    assert await socket_answer(origin, host) is allowed


@pytest.mark.django_db(transaction=True)
async def test_a_trusted_origin_and_a_tls_proxy_are_honoured(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://studio.example.com"]
    settings.ALLOWED_HOSTS = ["studio.example.com", "localhost"]
    assert await socket_answer(b"https://studio.example.com", b"internal:8000") is True
    assert await socket_answer(b"https://studio.example.com:8443", b"internal:8000") is False
    assert await socket_answer(b"https://localhost", b"localhost", scheme="wss") is True


@pytest.mark.django_db
def test_error_pages_are_in_the_studio_layout_and_json_on_the_api(client, alice, bob):
    client.force_login(bob)
    missing = client.get("/prompts/no-such-prompt/")
    assert missing.status_code == 404 and 'class="topbar"' in missing.content.decode()
    assert "There is no prompt" in missing.content.decode()
    assert client.get("/nothing-here/").status_code == 404
    api = client.get("/api/prompts/x/")
    assert api.status_code == 401 and api["Content-Type"] == "application/json"
    from chat.services import conversation_create

    alices = conversation_create(owner=alice, title="private")
    forbidden = client.post(f"/prompts/{'x'}/labels/")
    assert forbidden.status_code in (403, 404)
    assert client.get(f"/chat/{alices.pk}/").status_code == 404


def test_the_500_page_renders_without_the_database():
    from django.test import RequestFactory

    from studio.views import server_error

    response = server_error(RequestFactory().get("/chat/"))
    assert response.status_code == 500 and "nothing you sent was lost" in response.content.decode()
    api = server_error(RequestFactory().get("/api/prompts/x/"))
    assert api.status_code == 500 and b'"error"' in api.content


@pytest.mark.django_db
def test_an_expired_csrf_token_gets_a_page_that_says_what_to_do(alice):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post("/chat/new/")
    assert response.status_code == 403 and "Reload the page" in response.content.decode()


def manage(args, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    full_env.update(DJANGO_SETTINGS_MODULE="studio.settings", **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_check_deploy_is_clean_with_the_https_settings(tmp_path):
    https = dict(
        STUDIO_DATA_DIR=str(tmp_path),
        SECURE_COOKIES="true",
        SECURE_SSL_REDIRECT="true",
        SECURE_HSTS_SECONDS="31536000",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="true",
        SECURE_HSTS_PRELOAD="true",
        SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto: https",
        ALLOWED_HOSTS="studio.example.com",
    )
    result = manage(["check", "--deploy", "--fail-level", "WARNING"], **https)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    plain = manage(["check", "--deploy"], STUDIO_DATA_DIR=str(tmp_path))
    assert "security.W004" in plain.stderr + plain.stdout  # without them it warns, as it should


@pytest.mark.slow
def test_an_empty_admin_password_is_refused_with_a_message(tmp_path):
    result = manage(["serve", "--port", "1"], STUDIO_DATA_DIR=str(tmp_path), STUDIO_ADMIN_PASSWORD="  ")
    assert result.returncode != 0
    assert "STUDIO_ADMIN_PASSWORD is set but empty" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_the_upgrade_computes_stored_variables_for_existing_versions(alice):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor
    from django.utils import timezone

    executor = MigrationExecutor(connection)
    executor.migrate([("prompts", "0001_initial")])
    old_apps = executor.loader.project_state([("prompts", "0001_initial")]).apps
    old_prompt = old_apps.get_model("prompts", "Prompt").objects.create(name="Old", slug="old", owner_id=alice.pk)
    versions = old_apps.get_model("prompts", "PromptVersion").objects
    versions.create(
        prompt=old_prompt, number=1, template="{{ b }} and {{ a }}", author_id=alice.pk, created_at=timezone.now()
    )
    versions.create(
        prompt=old_prompt, number=2, template="{{ 9**(9**8) }}", author_id=alice.pk, created_at=timezone.now()
    )  # stored before the limits: migrating must not freeze

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    from prompts.models import PromptVersion

    assert PromptVersion.objects.get(prompt__slug="old", number=1).variables == ["b", "a"]
    assert PromptVersion.objects.get(prompt__slug="old", number=2).variables == []

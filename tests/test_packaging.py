"""The wheel holds the whole studio: installed with `pip install --no-deps` into an environment
that has the dependencies, its `studio` command serves every page from any folder, with the
data in ./data of that folder."""

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from benchmarks.processes import (
    REPO,
    BrowserSession,
    die_with_parent,
    free_port,
    stop_process,
    studio_env,
    wait_for_http,
)

pytestmark = pytest.mark.slow  # builds the wheel and serves it


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Offline: no build isolation (it would download setuptools); the test extra installs it.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return next(out.glob("chat_prompt_studio-*.whl"))


def test_the_wheel_holds_every_app_template_and_static_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    apps = sorted(path.parent.name for path in REPO.glob("*/apps.py"))  # every app of the checkout, new ones too
    assert {"studio", "chat", "prompts", "accounts", "evals", "finetune", "knowledge", "optimiser"} <= set(apps)
    for app in apps:
        assert f"{app}/models.py" in names or app == "studio", app
        assert f"{app}/__init__.py" in names
    for required in (
        "prompts/migrations/0002_version_variables_provenance.py",
        "studio/sandbox.py",
        "accounts/migrations/0001_initial.py",
        "chat/management/commands/llm_worker.py",
        "chat/serving/worker.py",
        "studio/templates/base.html",
        "studio/templates/prompts/prompt_detail.html",
        "studio/templates/registration/login.html",
        "studio/static/js/htmx.min.js",
        "studio/static/css/studio.css",
        "studio/cli.py",
        "evals/migrations/0001_initial.py",
        "studio/templates/evals/case_list.html",
        "studio/management/commands/job_worker.py",
    ):
        assert required in names, required
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "studio = studio.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_installed_studio_serves_every_page_from_another_folder(wheel, tmp_path):
    target = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True, timeout=120)
    site_packages = Path(
        subprocess.run(
            [target / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # "An environment that has the dependencies": ours, as a plain path (its .pth files, among them
    # the editable install of this checkout, are not read through it).
    (site_packages / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(target / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    elsewhere = tmp_path / "team-folder"
    elsewhere.mkdir()
    probe = subprocess.run(
        [target / "bin" / "python", "-c", "import prompts; print(prompts.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert str(site_packages) in probe.stdout, probe.stdout + probe.stderr  # the wheel's copy, not this checkout

    port = free_port()
    env = {
        k: v
        for k, v in studio_env(STUDIO_ADMIN_PASSWORD="admin-password-1", LLM_EMBEDDED_WORKER="false").items()
        if k not in ("STUDIO_DATA_DIR", "PYTHONPATH")
    }
    log = tmp_path / "serve.log"
    server = subprocess.Popen(
        [target / "bin" / "studio", "serve", "--port", str(port)],
        cwd=elsewhere,
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_for_http(base_url + "/accounts/login/", process=server, log=log)
        session = BrowserSession(base_url)
        session.login("admin", "admin-password-1")
        status, _, _ = session.post(
            "/prompts/new/", {"name": "Packaged", "slug": "packaged", "template": "Hello {{ name }}"}
        )
        assert status == 302, log.read_text()
        for path, expected in (
            ("/chat/", "New chat"),
            ("/prompts/", "Packaged"),
            ("/prompts/packaged/", "name"),
            ("/prompts/packaged/playground/", "Playground"),
            ("/accounts/settings/", "token"),
            ("/static/css/studio.css", "--accent"),
            ("/static/js/studio.js", "autosubmit"),
        ):
            status, body, _ = session.get(path)
            assert status == 200 and expected in body, path
        status, body, _ = session.post("/prompts/packaged/playground/preview/", {"a": "1", "var_name": "Ann"})
        assert status == 200 and "Hello Ann" in body  # templates render in the installed render process
        assert (elsewhere / "data" / "studio.sqlite3").exists()
    finally:
        stop_process(server)

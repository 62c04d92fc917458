"""A real studio (daphne, embedded worker, tiny model) and Debian's Chromium, driven by Playwright."""

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from benchmarks.processes import running_studio, studio_env
from tests.needs import missing
from tests.settings import TINY_MODEL_DIR

CHROMIUM = Path("/usr/bin/chromium")
EXPECT_TIMEOUT_MS = 30_000
expect.set_options(timeout=EXPECT_TIMEOUT_MS)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN_PASSWORD = "admin-password-1"
# Greedy replies of the tiny model are a few dozen newlines, then one word repeated. Through
# the server it writes 40-200 tokens/s here (it varies with the load): 400 tokens leave time
# to watch a reply grow and to stop it before its end, and keep the module well under a minute.
MAX_NEW_TOKENS = 400


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("browser-data")
    # BROWSER_TEST_MODEL=smollm2 runs these tests on the real default model (for screenshots
    # that show real text; it converts the bundled GGUF into .cache/tests/models once).
    model = os.environ.get("BROWSER_TEST_MODEL", str(TINY_MODEL_DIR))
    env = studio_env(
        STUDIO_DATA_DIR=data_dir,
        LLM_MODEL=model,
        LLM_EMBEDDED_WORKER="true",
        LLM_MODEL_CACHE_DIR=TINY_MODEL_DIR.parent / "models",
        LLM_TEMPERATURE=0,
        LLM_MAX_NEW_TOKENS=MAX_NEW_TOKENS,
        STUDIO_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    with running_studio(env, data_dir / "logs") as server:
        server.env = env  # for tests that set data up with `manage.py shell`
        yield server


@pytest.fixture(scope="module")
def chromium():
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, studio):
    """A fresh browser context (no cookies) on the studio; its console errors fail the test."""
    context = chromium.new_context(base_url=studio.base_url, viewport={"width": 1280, "height": 800})
    # Generous waits: they end as soon as the page is right, and a busy 2-core CI machine can take
    # many seconds for a swap that takes milliseconds here (expect's own default is 5 s).
    context.set_default_timeout(60_000)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # A page that needs something the Content-Security-Policy forbids (an inline handler or
    # script) logs a violation: that fails the test too.
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text
            else None
        ),
    )
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def screenshot(page):
    """Save the page as a PNG under $STUDIO_SCREENSHOTS (to look at), when that is set."""
    folder = os.environ.get("STUDIO_SCREENSHOTS")

    def screenshot(name):
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)

    return screenshot


@pytest.fixture
def log_in(page):
    def log_in(username="admin", password=ADMIN_PASSWORD):
        page.goto("/accounts/login/")
        page.get_by_label("User name").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/chat/")
        return page

    return log_in


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed browser test reports the end of its studio's log (server, job and model worker):
    what the page waited for usually failed or stalled there, and CI keeps nothing else."""
    report = yield
    studio = item.funcargs.get("studio") if hasattr(item, "funcargs") else None
    if report.failed and call.when == "call" and studio is not None:
        for log in sorted(studio.log_dir.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-80:]
            report.sections.append((f"studio log: {log.name} (last {len(lines)} lines)", "\n".join(lines)))
    return report

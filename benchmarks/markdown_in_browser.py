"""The browser's time per chunk while a long Markdown reply streams into the chat page.

    python -m benchmarks.markdown_in_browser [--blocks 20]

A real studio (daphne, embedded worker, the tiny model held by a regular-expression output format
to a known reply of `--blocks` code blocks between paragraphs and lists) and Debian's Chromium.
Every WebSocket frame's handling in the page (chat.js: text appended, finished blocks inserted,
the open code block shown) is timed with performance.now(); prints the per-frame times.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from benchmarks.processes import manage, running_studio, studio_env
from tests.settings import TINY_MODEL_DIR

PASSWORD = "bench-password-1"


STEP = (
    "## Step N\n\nWe pack the pears of crate N and check them.\n\n- weigh\n- label\n\n"
    "```python\ndef crate_N(pears):\n    return sorted(pears)[:N]\n```\n\n"
)


def escaped(text: str) -> str:
    return "".join("\\n" if ch == "\n" else "\\" + ch if ch in ".^$*+?()[]{}|\\" else ch for ch in text)


def reply_pattern(blocks: int) -> str:
    """`blocks` steps (each a heading, a paragraph, a list and a code block; N a number the model
    picks), then "Done.": a regex well under the version form's 1,000 characters."""
    step = escaped(STEP).replace("N", "[0-9]{1,2}")
    return f"({step}){{{blocks}}}Done\\."


TIME_FRAMES = """
(() => {
  window.__frameTimes = [];
  const add = WebSocket.prototype.addEventListener;
  WebSocket.prototype.addEventListener = function (type, listener, options) {
    if (type !== "message") return add.call(this, type, listener, options);
    return add.call(this, type, (event) => {
      const started = performance.now();
      listener(event);
      window.__frameTimes.push([JSON.parse(event.data).type, performance.now() - started]);
    }, options);
  };
})();
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=20, help="code blocks in the reply")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="bench-markdown-"))
    env = studio_env(
        STUDIO_DATA_DIR=data_dir,
        LLM_MODEL=str(TINY_MODEL_DIR),
        LLM_EMBEDDED_WORKER="true",
        LLM_MODEL_CACHE_DIR=TINY_MODEL_DIR.parent / "models",
        LLM_TEMPERATURE=0,
        LLM_MAX_NEW_TOKENS=4000,
        STUDIO_ADMIN_PASSWORD=PASSWORD,
    )
    from playwright.sync_api import sync_playwright

    with running_studio(env, data_dir) as studio:
        chat = (
            manage(
                [
                    "shell",
                    "-c",
                    f"""
from django.contrib.auth.models import User
from chat.models import Conversation
from prompts.services import prompt_create
admin = User.objects.get(username="admin")
prompt = prompt_create(owner=admin, name="Long plan", slug="long-plan", version={{
    "instructions": "Plan it.", "template": "{{{{ task }}}}", "max_new_tokens": 4000,
    "output_format": {{"type": "regex", "pattern": {reply_pattern(args.blocks)!r}}}}})
version = prompt.versions.get()
print("CHAT", Conversation.objects.create(owner=admin, prompt_version=version, title="Long").pk)
""",
                ],
                env,
            )
            .split("CHAT")[1]
            .split()[0]
        )
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium",
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page(base_url=studio.base_url)
            page.set_default_timeout(300_000)
            page.add_init_script(TIME_FRAMES)
            page.goto("/accounts/login/")
            page.get_by_label("User name").fill("admin")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url("**/chat/")
            page.goto(f"/chat/{chat}/")
            page.locator('#connection[data-state="open"]').wait_for()
            page.get_by_label("Message", exact=True).fill("Plan the crates")
            page.get_by_label("Message", exact=True).press("Enter")
            page.wait_for_function("""() => { const r = document.querySelectorAll('#messages [data-role="assistant"]');
                return r.length && r[r.length - 1].dataset.status === "complete"; }""")
            times = page.evaluate("window.__frameTimes")
            reply = page.locator('#messages [data-role="assistant"] .message__raw').last.input_value()
            rendered_blocks = page.locator('#messages [data-role="assistant"] .code-block').count()
            browser.close()
    by_type: dict[str, list[float]] = {}
    for frame_type, ms in times:
        by_type.setdefault(frame_type, []).append(ms)
    print(f"reply: {len(reply):,} characters, {rendered_blocks} code blocks")
    for frame_type in ("token", "blocks"):
        values = sorted(by_type.get(frame_type, []))
        if values:
            p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
            print(
                f"{frame_type} frames: {len(values)}, median {statistics.median(values):.3f} ms, p95 {p95:.3f} ms, "
                f"max {values[-1]:.3f} ms, total {sum(values):.1f} ms"
            )


if __name__ == "__main__":
    main()

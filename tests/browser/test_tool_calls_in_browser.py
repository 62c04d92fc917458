"""Tool calls in the playground, in Debian's Chromium at 1280 × 800 against a real daphne with the
tiny model: a version whose tool choice is `required` answers with a call, shown as a card (the
tool's name, the arguments as JSON) instead of the raw tags; the person types the tool's result,
Continue, and the run goes on: the result shows as a "Result of" card and the next reply is written."""

import pytest
from playwright.sync_api import expect

from benchmarks.processes import manage

pytestmark = pytest.mark.browser

SETUP = """
from django.contrib.auth.models import User
from prompts.services import prompt_create
weather = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city now",
    "parameters": {"type": "object", "properties": {"city": {"enum": ["Oslo", "Paris", "Lima"]},
    "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"], "additionalProperties": False}}}
prompt_create(owner=User.objects.get(username="admin"), name="Weather desk", slug="weather-desk", version={
    "instructions": "Answer with the weather tool.", "template": "{{ question }}", "max_new_tokens": 64,
    "tools": [weather], "tool_choice": "required", "parallel_tool_calls": False})
print("READY")
"""


@pytest.fixture(autouse=True)
def patient(page):
    page.set_default_timeout(120_000)  # the model loads while the first test runs


@pytest.fixture(scope="module")
def weather_desk(studio):
    assert "READY" in manage(["shell", "-c", SETUP], studio.env)


@pytest.mark.usefixtures("weather_desk")
def test_a_call_is_a_card_and_the_typed_result_continues_the_run(page, log_in, screenshot):
    log_in()
    page.goto("/prompts/weather-desk/playground/")
    page.get_by_label("question").fill("Is it raining in Oslo?")
    page.get_by_role("button", name="Run", exact=True).click()
    pane = page.locator("#runs .run")
    expect(pane.locator("[data-run-state]")).to_have_text("done")
    card = pane.locator('[data-run-output] [data-tool-call="get_weather"]')
    expect(card).to_be_visible()
    expect(card).to_contain_text('"city"')
    expect(pane.locator("[data-run-output]")).not_to_contain_text("<tool_call>")
    result = pane.get_by_label("Result of get_weather")
    expect(result).to_be_visible()
    screenshot("playground-tool-call")

    result.fill('{"temperature": 4, "rain": true}')
    pane.get_by_role("button", name="Continue").click()
    pane = page.locator("#runs .run")
    expect(pane.locator('[data-run-turn="user"] [data-tool-result="get_weather"]')).to_contain_text('"rain": true')
    expect(pane.locator("[data-run-state]")).to_have_text("done")
    expect(pane.locator('[data-run-output] [data-tool-call="get_weather"]')).to_be_visible()  # required: a call again
    screenshot("playground-tool-result-continued")

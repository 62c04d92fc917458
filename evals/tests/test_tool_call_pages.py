"""The tool_call scorer on the new-evaluation form (its `fields` checked at the field), and tool
calls shown as cards on a case's page."""

import pytest

from evals import selectors, services
from evals.models import Evaluation, EvaluationResult
from studio.llm.tools import call_text

pytestmark = pytest.mark.django_db


def test_the_form_offers_tool_call_and_takes_the_fields_to_compare(client, alice, make_cases):
    make_cases(1)
    client.force_login(alice)
    assert 'value="tool_call"' in client.get("/evaluations/new/?prompt=order-json").content.decode()
    response = client.post(
        "/evaluations/new/", {"prompt": "order-json", "scorer": ["tool_call"], "fields_tool_call": "city, where.zip"}
    )
    assert response.status_code == 302
    assert Evaluation.objects.get().scorers == [
        {"type": "tool_call", "threshold": 1.0, "fields": ["city", "where.zip"]}
    ]


def test_too_many_fields_are_refused_at_the_field(client, alice, make_cases):
    make_cases(1)
    client.force_login(alice)
    fields = ", ".join(f"f{n}" for n in range(51))
    response = client.post(
        "/evaluations/new/", {"prompt": "order-json", "scorer": ["tool_call"], "fields_tool_call": fields}
    )
    assert response.status_code == 400 and not Evaluation.objects.exists()
    assert "scorers[0].fields: a list of 1 to 50 argument names" in response.content.decode()


def test_a_case_page_shows_calls_as_cards_and_only_to_who_may_see_it(client, alice, bob, make_cases):
    case = make_cases(
        1,
        shared=False,
        actual=call_text("get_weather", {"city": "Paris"}),
        expected={"name": "get_time", "arguments": {}},
    )[0]
    client.force_login(alice)
    page = client.get(f"/cases/{case.pk}/").content.decode()
    assert 'data-tool-call="get_weather"' in page and 'data-tool-call="get_time"' in page
    assert "&quot;city&quot;: &quot;Paris&quot;" in page  # the arguments, pretty-printed
    listed = client.get("/cases/").content.decode()
    assert 'data-tool-call="get_weather"' in listed
    client.force_login(bob)  # a private case: not his to see
    assert client.get(f"/cases/{case.pk}/").status_code == 404


def finished_evaluation(alice, version, outputs: dict):
    """An evaluation stored as its run would leave it: `outputs` case → reply text."""
    evaluation = services.evaluation_create(
        user=alice, version=version, model_name="", filters={}, scorers=[{"type": "tool_call", "fields": ["city"]}]
    )
    for case, output in outputs.items():
        EvaluationResult.objects.create(evaluation=evaluation, case=case, output=output, scores={"tool_call": 0.0})
    Evaluation.objects.filter(pk=evaluation.pk).update(status="finished", done=len(outputs), total=len(outputs))
    return evaluation


def test_the_by_tool_figures_follow_the_scorer_s_fields_and_compare_side_by_side(client, alice, bob, make_cases):
    expected = {"name": "get_weather", "arguments": {"city": "Lyon", "unit": "celsius"}}
    lyon, paris = make_cases(2, expected=expected)
    version = lyon.prompt_version
    first = finished_evaluation(
        alice, version, {lyon: call_text("get_weather", {"city": "Lyon", "unit": "kelvin"}), paris: "Sunny."}
    )
    second = finished_evaluation(
        alice,
        version,
        {lyon: call_text("get_weather", {"city": "Lyon"}), paris: call_text("get_weather", {"city": "Lyon"})},
    )
    # the fields are the scorer's: a wrong unit does not count against the arguments
    assert selectors.by_tool_of(first) == [
        {"tool": "get_weather", "cases": 2, "name_accuracy": 0.5, "arguments_accuracy": 0.5, "of": 0}
    ]
    assert selectors.by_tool_of(second)[0]["arguments_accuracy"] == 1.0
    client.force_login(alice)
    page = client.get(f"/evaluations/compare/?a={first.pk}&b={second.pk}").content.decode()
    assert "data-by-tool-compared" in page and "50%" in page and "100%" in page
    Evaluation.objects.update(shared=False)
    client.force_login(bob)
    assert client.get(f"/evaluations/compare/?a={first.pk}&b={second.pk}").status_code == 404

"""The curation page: filters, search, edit in place, bulk changes, counts and the hint, who sees
and changes what (a second user), few-shot examples from cases."""

import pytest

from evals import services
from evals.models import CaseSelection, FailureCase

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}


def rows(html):
    return html.count('<tr id="case-')


def test_the_page_lists_filters_and_searches_cases(client, alice, make_cases, chat_with_reply):
    make_cases(3, tags=["json"])
    make_cases(2, split="eval", status="fixed")
    services.case_flag(user=alice, message=chat_with_reply[1], expected="4")
    client.force_login(alice)
    assert rows(client.get("/cases/").content.decode()) == 6
    assert rows(client.get("/cases/?prompt=order-json&split=eval").content.decode()) == 2
    assert rows(client.get("/cases/?prompt=-").content.decode()) == 1
    assert rows(client.get("/cases/?tag=json").content.decode()) == 3
    assert rows(client.get("/cases/?status=fixed").content.decode()) == 2
    assert rows(client.get("/cases/?source=chat&author=alice").content.decode()) == 1
    assert rows(client.get("/cases/?q=2%20%2B%202").content.decode()) == 1  # searches the input
    partial = client.get("/cases/?split=eval", headers={**HTMX, "HX-Target": "case-table"}).content.decode()
    assert "<html" not in partial and rows(partial) == 2


def test_counts_per_prompt_and_split_with_progress_and_a_hint(client, alice, make_cases, settings):
    settings.FAILURE_CASES_FOR_FINE_TUNING = 10
    make_cases(4)
    client.force_login(alice)
    page = client.get("/cases/").content.decode()
    assert "4 train · 0 eval" in page and 'value="40"' in page
    assert "Move some cases to the eval split" in page


def test_the_list_runs_a_fixed_number_of_queries(client, alice, make_cases, django_assert_max_num_queries):
    make_cases(40, tags=["a", "b"])
    client.force_login(alice)
    with django_assert_max_num_queries(14):
        client.get("/cases/")


def test_edit_in_place_and_bulk_changes(client, alice, make_cases):
    cases = make_cases(3)
    client.force_login(alice)
    response = client.post(
        f"/cases/{cases[0].pk}/",
        {
            "expected": '{"item": "apple", "quantity": 3}',
            "tags": "Hard, json",
            "split": "eval",
            "status": "wontfix",
            "note": "tricky",
        },
        headers=HTMX,
    )
    assert response.status_code == 200 and "Saved." in response.content.decode()
    case = FailureCase.objects.get(pk=cases[0].pk)
    assert (case.split, case.status, case.note) == ("eval", "wontfix", "tricky")
    assert sorted(t.name for t in case.tags.all()) == ["hard", "json"]
    ids = [str(c.pk) for c in cases]
    html = client.post("/cases/bulk/", {"case": ids, "action": "add_tag", "value": "batch-1"}, headers=HTMX)
    assert "3 of 3 selected cases changed" in html.content.decode()
    assert FailureCase.objects.filter(tags__name="batch-1").count() == 3
    client.post("/cases/bulk/", {"case": ids[:2], "action": "split", "value": "eval"}, headers=HTMX)
    assert FailureCase.objects.filter(split="eval").count() == 2
    client.post("/cases/bulk/", {"case": ids[:1], "action": "delete"}, headers=HTMX)
    assert FailureCase.objects.count() == 2


def test_a_second_user_sees_shared_cases_but_not_private_ones_and_changes_neither(
    client, alice, bob, make_cases, chat_with_reply
):
    shared = make_cases(1)[0]
    private = services.case_flag(user=alice, message=chat_with_reply[1], expected="4")
    client.force_login(bob)
    page = client.get("/cases/").content.decode()
    assert f'id="case-{shared.pk}"' in page and f'id="case-{private.pk}"' not in page
    assert client.get(f"/cases/{private.pk}/").status_code == 404
    assert "Only its author" in client.get(f"/cases/{shared.pk}/").content.decode()
    assert client.post(f"/cases/{shared.pk}/", {"expected": "mine"}, headers=HTMX).status_code == 400
    html = client.post("/cases/bulk/", {"case": [shared.pk, private.pk], "action": "delete"}, headers=HTMX)
    assert "0 of 1 selected case changed" in html.content.decode()  # the private one is not even selectable
    assert FailureCase.objects.count() == 2 and FailureCase.objects.get(pk=shared.pk).expected != "mine"


def test_staff_do_not_see_private_cases_either(client, carol, alice, chat_with_reply):
    private = services.case_flag(user=alice, message=chat_with_reply[1], expected="4")
    client.force_login(carol)
    assert client.get(f"/cases/{private.pk}/").status_code == 404


def test_an_editor_of_the_prompt_curates_its_shared_cases(client, alice, bob, make_cases, order_prompt):
    from prompts import services as prompt_services

    case = make_cases(1)[0]
    prompt_services.editor_add(prompt=order_prompt, username="bob", user=alice)
    client.force_login(bob)
    client.post(f"/cases/{case.pk}/", {"expected": "bob's fix"}, headers=HTMX)
    assert FailureCase.objects.get(pk=case.pk).expected == "bob's fix"


def test_a_saved_selection_filters_the_list_export_and_evaluations(client, alice, make_cases):
    make_cases(2, split="eval")
    make_cases(3)
    client.force_login(alice)
    client.post("/cases/selections/", {"name": "held out", "split": "eval", "prompt": "order-json"}, headers=HTMX)
    selection = CaseSelection.objects.get(owner=alice, name="held out")
    assert selection.filters == {"split": "eval", "prompt": "order-json"}
    assert rows(client.get(f"/cases/?selection={selection.pk}").content.decode()) == 2
    response = client.get(f"/cases/export/?format=sft&selection={selection.pk}")
    assert len(b"".join(response.streaming_content).splitlines()) == 2


def test_selected_cases_open_the_prompt_editor_prefilled_as_few_shot_examples(client, alice, make_cases, order_prompt):
    cases = make_cases(2)
    client.force_login(alice)
    response = client.post("/cases/bulk/", {"case": [c.pk for c in cases], "action": "few_shot"}, headers=HTMX)
    editor_url = response["HX-Redirect"]
    page = client.get(editor_url).content.decode()
    assert "2 failure cases were added as few-shot examples" in page and "Nothing is saved" in page
    # The cases' variables are the examples' inputs, rendered through the template when saved.
    assert '<textarea name="example_input" rows="2">2 apples</textarea>' in page and "&quot;quantity&quot;: 3" in page
    assert 'value="template" selected' in page
    assert f'action="/prompts/{order_prompt.slug}/versions/new/"' in page
    assert order_prompt.versions.count() == 1  # nothing saved yet


def test_the_prompt_page_offers_running_the_open_cases(client, alice, make_cases, order_prompt):
    make_cases(3)
    client.force_login(alice)
    html = client.get(f"/cases/prompt-summary/{order_prompt.slug}/?version=1").content.decode()
    assert "3 open" in html and "Run v1 against the open cases" in html
    assert "status=open" in html


def test_every_page_needs_a_login(client, make_cases):
    case = make_cases(1)[0]
    for url in (
        "/cases/",
        f"/cases/{case.pk}/",
        "/cases/new/",
        "/cases/import/",
        "/evaluations/",
        "/evaluations/new/",
        "/cases/export/?format=csv",
    ):
        assert client.get(url).status_code == 302, url

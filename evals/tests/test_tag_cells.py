"""One rule for a tags cell: a comma or a semicolon separates tags, a tag that holds one is quoted,
and every tag survives an export and an import (a tags cell `@sum(1,2)` was split at its comma; a
CSV cell `a;b` became one tag)."""

import pytest

from evals import services
from evals.models import FailureCase
from evals.tag_cells import tags_cell_joined, tags_cell_split
from evals.tests.test_import_export import csv_text, export, import_and_run, upload

pytestmark = pytest.mark.django_db
AWKWARD_TAGS = ["@sum(1,2)", "a;b", 'say "hi"', "=cmd()", "json"]


@pytest.mark.parametrize(
    "cell, tags",
    [
        ("a;b", ["a", "b"]),
        ("a, b ;c", ["a", "b", "c"]),
        ('" padded ", x', [" padded ", "x"]),
        ('"@sum(1,2)", json', ["@sum(1,2)", "json"]),
        ('"say ""hi"""', ['say "hi"']),
        (";;", []),
    ],
)
def test_a_cell_is_split_at_commas_and_semicolons_outside_quotes(cell, tags):
    assert tags_cell_split(cell) == tags


def test_every_tag_reads_back_from_the_cell_it_is_written_to():
    assert tags_cell_split(tags_cell_joined(AWKWARD_TAGS)) == AWKWARD_TAGS


def test_tags_with_commas_semicolons_and_quotes_survive_a_csv_export_and_import(client, alice, make_cases):
    make_cases(2, tags=AWKWARD_TAGS)
    client.force_login(alice)
    exported = export(client, "csv")
    FailureCase.objects.all().delete()
    draft = upload(client, "cases.csv", exported)
    page = import_and_run(client, draft, {})
    assert "2 cases imported" in page
    for case in FailureCase.objects.all():
        assert sorted(tag.name for tag in case.tags.all()) == sorted(AWKWARD_TAGS)


def test_a_semicolon_separates_tags_in_an_imported_csv_and_the_page_says_so(client, alice, order_version):
    client.force_login(alice)
    upload_page = client.get("/cases/import/").content.decode()
    assert "Separate tags with a comma or a semicolon" in upload_page
    content = csv_text([["3 pears", '{"quantity": 3}', "fruit;json"]], ["order", "expected", "tags"])
    draft = upload(client, "orders.csv", content)
    import_and_run(
        client,
        draft,
        {
            "mapped": "1",
            "fixed_prompt": "order-json",
            "map_var_order": "order",
            "map_expected": "expected",
            "map_tags": "tags",
        },
    )
    assert sorted(tag.name for tag in FailureCase.objects.get().tags.all()) == ["fruit", "json"]


def test_saving_a_case_form_keeps_a_tag_that_holds_a_comma(client, alice, make_cases):
    case = make_cases(1, tags=["@sum(1,2)", "json"])[0]
    client.force_login(alice)
    page = client.get(case.get_absolute_url()).content.decode()
    assert 'value="&quot;@sum(1,2)&quot;, json"' in page
    client.post(
        case.get_absolute_url(),
        {"expected": case.expected, "tags": '"@sum(1,2)", json', "split": "train", "status": "open"},
        headers={"HX-Request": "true"},
    )
    assert sorted(tag.name for tag in case.tags.all()) == ["@sum(1,2)", "json"]
    assert services.clean_tags("a;b") == ["a", "b"]

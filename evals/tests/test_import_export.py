"""Import from CSV/JSONL with a mapping step (nothing imported while a row is wrong, duplicates
detected), and exports that the `datasets` library loads unchanged."""

import csv
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from evals import importing
from evals.models import FailureCase, ImportDraft

pytestmark = pytest.mark.django_db


def upload(client, name, content: str):
    response = client.post("/cases/import/", {"file": SimpleUploadedFile(name, content.encode())})
    assert response.status_code == 302, response.content.decode()[:500]
    return ImportDraft.objects.get()


def csv_text(rows, header):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def import_and_run(client, draft, data):
    """Start the import from the page, then run the job the job worker would run."""
    response = client.post(f"/cases/import/{draft.pk}/", {**data, "import": "1"})
    assert response.status_code == 302, response.content.decode()[-2000:]
    draft.refresh_from_db()
    assert draft.status == "queued"
    importing.import_run(draft.pk)
    return client.get(f"/cases/import/{draft.pk}/").content.decode()


def test_a_csv_with_other_column_names_is_mapped_checked_and_imported(client, alice, order_version):
    content = csv_text(
        [[f"{n} pears", "pears", f'{{"item": "pear", "quantity": {n}}}', "fruit,json"] for n in range(1, 11)],
        ["customer_order", "model_said", "gold", "labels"],
    )
    client.force_login(alice)
    draft = upload(client, "orders.csv", content)
    page = client.get(f"/cases/import/{draft.pk}/?fixed_prompt=order-json").content.decode()
    assert "variable <code>order</code>" in page and "Choose the column that holds the expected answer" in page
    mapping = {
        "mapped": "1",
        "fixed_prompt": "order-json",
        "map_var_order": "customer_order",
        "map_actual": "model_said",
        "map_expected": "gold",
        "map_tags": "labels",
    }
    preview = client.post(
        f"/cases/import/{draft.pk}/", mapping, headers={"HX-Request": "true", "HX-Target": "import-preview"}
    )
    assert "10 ready" in preview.content.decode() and "0 with errors" in preview.content.decode()
    page = import_and_run(client, draft, {**mapping, "eval_share": "20"})
    assert "10 cases imported" in page and "0 skipped as duplicates" in page and "0 rows refused" in page
    cases = FailureCase.objects.order_by("id")
    assert cases.count() == 10 and cases.filter(split="eval").count() == 2
    first = cases.first()
    assert first.input_variables == {"order": "1 pears"} and first.prompt_version == order_version
    assert first.source == "import" and sorted(t.name for t in first.tags.all()) == ["fruit", "json"]


def test_rows_with_errors_are_named_by_row_and_column_and_nothing_is_imported(client, alice, order_version):
    lines = [
        {"prompt": "order-json", "input": {"order": "ok"}, "expected": "fine"},
        {"prompt": "order-json", "input": {"order": "no expected"}},
        {"prompt": "no-such-prompt", "input": "x", "expected": "y"},
        {"prompt": "order-json", "input": {"order": "wrong split"}, "expected": "y", "split": "test"},
    ]
    client.force_login(alice)
    draft = upload(client, "cases.jsonl", "\n".join(json.dumps(line) for line in lines))
    page = client.get(f"/cases/import/{draft.pk}/").content.decode()
    assert "1 ready" in page and "3 with errors" in page
    assert "expected: must not be empty" in page
    assert "there is no prompt “no-such-prompt”" in page and "split: must be one of" in page
    page = import_and_run(client, draft, {"eval_share": "25"})
    assert "Nothing was imported: 3 rows have errors" in page
    assert "<td>2</td><td><code>expected</code></td><td>must not be empty</td>" in page
    assert 'name="eval_share" type="number" min="0" max="100" step="any" value="25"' in page  # kept as entered
    assert not FailureCase.objects.exists()
    page = import_and_run(client, draft, {"only_valid": "on"})
    assert FailureCase.objects.count() == 1
    assert "1 case imported" in page and "0 skipped as duplicates" in page and "3 rows refused" in page


def test_a_csv_row_with_more_fields_than_the_header_is_an_error_on_that_row(client, alice, order_version):
    content = "prompt,input,expected,split,note\norder-json,one,a,train,x\norder-json,two,b,train,x,extra,more\n"
    client.force_login(alice)
    draft = upload(client, "cases.csv", content)
    page = client.get(f"/cases/import/{draft.pk}/").content.decode()
    assert "1 ready" in page and "1 with errors" in page and "has 7 fields; the header has 5" in page


def test_before_a_prompt_is_chosen_rows_are_shown_unchecked_with_what_to_choose(client, alice, order_version):
    content = csv_text([["2 pears", "x"]], ["order", "gold"])
    client.force_login(alice)
    draft = upload(client, "orders.csv", content)
    page = client.get(f"/cases/import/{draft.pk}/").content.decode()
    assert "Choose the prompt these cases belong to" in page and "not checked yet" in page
    assert "must be the message text" not in page and "ready" not in page


def test_a_large_file_is_checked_page_by_page_and_the_import_checks_each_row_once(
    client, alice, order_version, monkeypatch
):
    lines = [{"prompt": "order-json", "input": {"order": f"{n} pears"}, "expected": "x"} for n in range(2000)]
    client.force_login(alice)
    draft = upload(client, "big.jsonl", "\n".join(json.dumps(line) for line in lines))
    checked_rows = []
    real_clean_case = importing.services.clean_case
    monkeypatch.setattr(
        importing.services, "clean_case", lambda raw, **kw: checked_rows.append(raw) or real_clean_case(raw, **kw)
    )
    page = client.get(f"/cases/import/{draft.pk}/").content.decode()
    assert len(checked_rows) == importing.PREVIEW_ROWS and "Rows 1–25 checked here" in page
    client.post(
        f"/cases/import/{draft.pk}/",
        {
            "mapped": "1",
            "fixed_prompt": "(column)",
            "map_prompt": "prompt",
            "map_input": "input",
            "map_expected": "expected",
            "page": "3",
        },
    )
    assert len(checked_rows) == 2 * importing.PREVIEW_ROWS and checked_rows[-1]["input"] == {"order": "74 pears"}
    checked_rows.clear()
    page = import_and_run(client, draft, {})
    assert len(checked_rows) == 2000 and FailureCase.objects.count() == 2000
    assert "2000 cases imported" in page


def test_duplicates_in_the_file_and_already_stored_are_skipped(client, alice, order_version, make_cases):
    make_cases(1)  # stores input {"order": "2 apples"}
    lines = [
        {"prompt": "order-json", "input": {"order": "2 apples"}, "expected": "a"},
        {"prompt": "order-json", "input": {"order": "new"}, "expected": "b"},
        {"prompt": "order-json", "input": {"order": "new"}, "expected": "c"},
    ]
    checked = importing.check_rows(lines, importing.guess_mapping(["prompt", "input", "expected"]), {}, user=alice)
    assert [row for row, _ in checked["valid"]] == [2]
    assert [(row, "exists already" in why or "row 2" in why) for row, why in checked["duplicates"]] == [
        (1, True),
        (3, True),
    ]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("x.csv", "", "no rows"),
        ("x.jsonl", "{not json", "Line 1"),
        ("x.jsonl", "[1, 2]", "JSON object"),
        ("x.csv", "a,b\n\x00,1", "NUL"),
        ("x.jsonl", '{"a": "\\u0000"}', "NUL"),
    ],
)
def test_a_bad_file_is_refused_with_a_reason(client, alice, name, content, message):
    client.force_login(alice)
    response = client.post("/cases/import/", {"file": SimpleUploadedFile(name, content.encode())})
    assert response.status_code == 400 and message in response.content.decode()
    assert not ImportDraft.objects.exists()


def test_someone_elses_draft_is_not_found_nor_imported(client, alice, bob):
    draft = ImportDraft.objects.create(owner=alice, filename="a.csv", columns=["x"], rows=[{"x": "1"}])
    client.force_login(bob)
    assert client.get(f"/cases/import/{draft.pk}/").status_code == 404
    assert client.post(f"/cases/import/{draft.pk}/", {"import": "1"}).status_code == 404


def export(client, export_format, query=""):
    response = client.get(f"/cases/export/?format={export_format}{query}")
    assert response.status_code == 200
    return b"".join(response.streaming_content).decode()


def test_exports_load_with_the_datasets_library_unchanged(
    client, alice, order_version, make_cases, chat_with_reply, tmp_path
):
    import datasets

    from evals import services

    make_cases(3, tags=["json"])
    services.case_flag(user=alice, message=chat_with_reply[1], expected="4", shared=True)
    client.force_login(alice)
    files = {}
    for export_format, extension in (("sft", "jsonl"), ("dpo", "jsonl"), ("csv", "csv")):
        files[export_format] = tmp_path / f"cases.{export_format}.{extension}"
        files[export_format].write_text(export(client, export_format))

    sft = datasets.load_dataset("json", data_files=str(files["sft"]), split="train")
    assert len(sft) == 4
    first = sft[0]["messages"]
    assert first[0] == {"role": "system", "content": 'Reply with JSON only: {"item": <text>, "quantity": <number>}.'}
    assert first[1] == {"role": "user", "content": "Order: 2 apples"}
    assert first[-1] == {"role": "assistant", "content": '{"item": "apple", "quantity": 2}'}
    chat_case = sft[3]["messages"]
    assert [m["role"] for m in chat_case] == ["system", "user", "assistant", "user", "assistant"]
    assert chat_case[-2:] == [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}]

    dpo = datasets.load_dataset("json", data_files=str(files["dpo"]), split="train")
    assert set(dpo.column_names) == {"prompt", "chosen", "rejected", "system"}
    assert dpo[0]["prompt"] == "Order: 2 apples" and dpo[0]["chosen"] == '{"item": "apple", "quantity": 2}'
    assert dpo[0]["rejected"] == "apples"

    flat = datasets.load_dataset("csv", data_files=str(files["csv"]), split="train")
    assert len(flat) == 4 and flat[0]["prompt"] == "order-json" and flat[0]["tags"] == "json"


def test_an_export_takes_only_the_filtered_cases_a_user_may_see(client, alice, bob, make_cases, order_version):
    make_cases(2, split="eval")
    from evals import services

    services.cases_create(
        user=bob,
        rows=[{"prompt": "order-json", "input": {"order": "bob's secret"}, "expected": "x"}],
        source="api",
        shared=False,
    )
    client.force_login(alice)
    assert "secret" not in export(client, "csv")
    assert export(client, "sft", "&split=train") == ""
    assert len(export(client, "sft", "&split=eval").splitlines()) == 2
    client.force_login(bob)
    assert "secret" in export(client, "csv")

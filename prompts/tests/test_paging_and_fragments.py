"""Prompts with very many versions and label moves stay fast pages; the label card updates the
history column and keeps what was typed."""

import pytest
from django.utils import timezone

from prompts import services
from prompts.models import LabelMove, PromptVersion

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


@pytest.fixture
def long_history(alice, notes):
    """notes with 2,000 versions (the finding: 48,000 versions made a 13.7 MB page)."""
    now = timezone.now()
    PromptVersion.objects.bulk_create(
        [
            PromptVersion(
                prompt=notes,
                number=n,
                template="{{ text }}",
                variables=["text"],
                author=alice,
                created_at=now,
                commit_message=f"change {n}",
            )
            for n in range(3, 2001)
        ]
    )
    LabelMove.objects.bulk_create(
        [
            LabelMove(prompt=notes, label="staging", from_number=n - 1, to_number=n, moved_by=alice, moved_at=now)
            for n in range(2, 201)
        ]
    )
    return notes


def test_a_prompt_with_thousands_of_versions_renders_a_small_paged_page(
    client, alice, long_history, django_assert_max_num_queries
):
    client.force_login(alice)
    # The same for 2 versions or 48,000 (17 since the A/B split card: the running split, its labels).
    with django_assert_max_num_queries(17):
        response = client.get(f"/prompts/{long_history.slug}/")
    html = response.content.decode()
    assert response.status_code == 200 and len(html) < 120_000
    assert html.count('class="history__item') == 50 and "Older versions" in html
    assert 'type="number"' in html and 'max="2000"' in html  # no 2,000-option picker
    assert "(2000 versions)" in html and "v2000" in html


def test_older_versions_and_moves_load_page_by_page(client, alice, long_history):
    client.force_login(alice)
    older = client.get(f"/prompts/{long_history.slug}/history/?page=2&shown=1950").content.decode()
    assert older.count('class="history__item') == 50 and ">v1950<" in older and ">v1951<" not in older
    assert "history__item--current" in older
    moves = client.get(f"/prompts/{long_history.slug}/label-history/?page=2").content.decode()
    assert moves.count("badge--label") == 20 and "Older moves" in moves


def test_the_diff_and_playground_pickers_stay_small(client, alice, long_history):
    client.force_login(alice)
    for url in (f"/prompts/{long_history.slug}/diff/?from=5&to=1999", f"/prompts/{long_history.slug}/playground/"):
        html = client.get(url).content.decode()
        assert len(html) < 60_000 and "<option" not in html.split("</form>")[0]


def test_the_library_is_paged(client, alice, make_prompt):
    for n in range(55):
        make_prompt(alice, slug=f"prompt-{n:02}")
    client.force_login(alice)
    first = client.get("/prompts/").content.decode()
    assert first.count('class="table__title"') == 50 and "Page 1 of 2" in first
    assert client.get("/prompts/?page=2").content.decode().count('class="table__title"') == 5


def test_a_label_move_updates_the_history_column_out_of_band(client, alice, notes):
    client.force_login(alice)
    html = client.post(
        f"/prompts/{notes.slug}/labels/", {"label": "production", "version": "1", "shown": "2"}, headers=HTMX
    ).content.decode()
    history = html.split('id="history"')[1]
    assert 'hx-swap-oob="true"' in history.split(">")[0]
    v1 = history.split(">v1<")[1].split("</li>")[0]
    assert "production" in v1
    assert "history__item--current" in history.split(">v2<")[0].rsplit("<li", 1)[1]


def test_an_invalid_label_keeps_what_was_typed_and_says_why(client, alice, notes):
    client.force_login(alice)
    html = client.post(
        f"/prompts/{notes.slug}/labels/", {"label": "Not a label!", "version": "1", "shown": "2"}, headers=HTMX
    ).content.decode()
    assert 'value="Not a label!"' in html and "Use lower-case letters" in html
    assert 'aria-invalid="true"' in html and not LabelMove.objects.exists()


def test_an_imported_version_shows_where_it_came_from(client, alice, notes):
    data = services.prompt_export(notes)
    data["prompt"]["slug"] = "copy"
    data["versions"][0]["author"] = "someone-elsewhere"
    copy = services.prompt_import(data=data, owner=alice)
    client.force_login(alice)
    assert (
        "imported; originally by someone-elsewhere" in client.get(f"/prompts/{copy.slug}/versions/1/").content.decode()
    )

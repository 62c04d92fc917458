import pytest

from .conftest import FIRST_VERSION, SECOND_VERSION

pytestmark = pytest.mark.django_db


def test_the_library_lists_every_prompt_with_its_latest_version_and_labels(
    client, alice, bob, make_prompt, django_assert_max_num_queries
):
    for n in range(5):
        prompt = make_prompt(alice if n % 2 else bob, slug=f"prompt-{n}", versions=(FIRST_VERSION, SECOND_VERSION))
        from prompts import services

        services.label_move(prompt=prompt, name="production", version=prompt.versions.get(number=1), user=prompt.owner)
    client.force_login(bob)
    # Planned queries: the count stays the same however many prompts there are.
    with django_assert_max_num_queries(6):
        response = client.get("/prompts/")
    assert response.status_code == 200
    page = response.content.decode()
    assert page.count("production → v1") == 5
    assert "prompt-4" in page and "v2" in page

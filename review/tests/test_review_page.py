"""/review/?prompt=<slug>: the queue beside the item (its input, context, answer and why it is
there), the expected answer's textarea and the Fine / Skip / Claim buttons (htmx), errors where
the person looks."""

import pytest

from evals.models import FailureCase
from review.models import ReviewItem
from review.services import item_add

from .conftest import live_reply

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def words(response) -> str:
    return " ".join(response.content.decode().split())


@pytest.fixture
def item(reply):
    return item_add(
        message_id=reply.pk, reason=ReviewItem.Reason.LOW_SCORE, scores={"llm_judge": 0.2}, judge_below=True
    )


def test_the_page_shows_the_item_and_why_it_is_there(client, alice, item):
    client.force_login(alice)
    page = words(client.get("/review/?prompt=support"))
    assert "Review queue: Support" in page and "1 open · 0 corrected · 0 fine · 0 skipped" in page
    assert "An online evaluation rule scored it below its threshold." in page and "<code>llm_judge</code> 0.2" in page
    assert "Where is my order?" in page and "Answer the customer in one sentence." in page and "No idea." in page
    assert (
        'name="expected"' in page
        and ">Fine</button>" in page
        and ">Skip</button>" in page
        and ">Claim</button>" in page
    )
    assert 'name="viewport"' in page  # the base layout's: the page is laid out for phones too


def test_the_expected_answer_written_on_the_page_becomes_a_case(client, alice, item):
    client.force_login(alice)
    answer = client.post(f"/review/{item.pk}/review/", {"expected": "It ships tomorrow.", "shared": "on"}, **HTMX)
    case = FailureCase.objects.get()
    assert answer.status_code == 200 and f"Saved as failure case #{case.pk}." in words(answer)
    assert case.source == "production" and case.shared and case.expected == "It ships tomorrow."
    assert ReviewItem.objects.get().status == "corrected" and 'name="expected"' not in words(answer)


def test_an_empty_answer_is_refused_beside_the_textarea(client, alice, item):
    client.force_login(alice)
    answer = client.post(f"/review/{item.pk}/review/", {"expected": " "}, **HTMX)
    assert answer.status_code == 400 and "write the answer the model should have given" in words(answer)
    assert ReviewItem.objects.get().status == "open"


@pytest.mark.parametrize("verdict, said, status", [("fine", "Marked fine.", "fine"), ("skip", "Skipped.", "skipped")])
def test_fine_and_skip(client, alice, item, verdict, said, status):
    client.force_login(alice)
    answer = client.post(f"/review/{item.pk}/review/", {"verdict": verdict}, **HTMX)
    assert answer.status_code == 200 and said in words(answer) and ReviewItem.objects.get().status == status


def test_a_reviewer_who_comes_second_is_told_in_the_item(client, alice, dave, item, api):
    api("dave").post(f"/api/review-queue/{item.pk}/claim/")
    client.force_login(alice)
    answer = client.post(f"/review/{item.pk}/review/", {"verdict": "fine"}, **HTMX)
    assert answer.status_code == 409 and "claimed by dave" in words(answer)
    answer = client.post(f"/review/{item.pk}/claim/", **HTMX)
    assert answer.status_code == 409 and "claimed by dave" in words(answer)


def test_claim_and_assign_from_the_page(client, alice, item):
    client.force_login(alice)
    assert "Claimed for you for 30 minutes." in words(client.post(f"/review/{item.pk}/claim/", **HTMX))
    assert "Assigned to dave." in words(client.post(f"/review/{item.pk}/assign/", {"user": "dave"}, **HTMX))
    refused = client.post(f"/review/{item.pk}/assign/", {"user": "bob"}, **HTMX)
    assert refused.status_code == 400 and "bob may not review" in words(refused)


def test_the_next_item_is_offered_after_a_review(client, alice, item, support_version, bob):
    second = item_add(message_id=live_reply(support_version, owner=bob).pk, reason=ReviewItem.Reason.PICKED)
    client.force_login(alice)
    answer = words(client.post(f"/review/{item.pk}/review/", {"verdict": "fine"}, **HTMX))
    assert f'hx-get="/review/{second.pk}/"' in answer and "Next item →" in answer
    shown = words(client.get(f"/review/{second.pk}/", **HTMX))
    assert "Someone sent it to review." in shown


def test_the_list_pages_with_more_and_its_queries_are_planned(client, alice, support_version, bob):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for n in range(55):
        item_add(message_id=live_reply(support_version, owner=bob, question=f"Q{n}").pk, reason="thumbs_down")
    client.force_login(alice)
    with CaptureQueriesContext(connection) as page_queries:
        page = words(client.get("/review/?prompt=support"))
    assert page.count('class="history__item') == 51  # 50 rows and "More"
    # session, person, prompt, page, reviews, counts, agreement (2): 8 here, whatever the queue holds
    assert len(page_queries.captured_queries) <= 10
    after = ReviewItem.objects.order_by("pk")[49].pk
    more = words(client.get(f"/review/items/?prompt=support&status=open&after={after}", **HTMX))
    assert more.count('class="history__item') == 5


def test_send_to_review_opens_the_item_in_its_queue(client, alice, reply):
    client.force_login(alice)
    answer = client.post("/review/pick/", {"message": reply.pk})
    item = ReviewItem.objects.get()
    assert answer.status_code == 302 and answer["Location"] == f"/review/?prompt=support&item={item.pk}"
    assert item.reason == "picked"


def test_the_list_of_prompts_to_review(client, alice, bob, item):
    client.force_login(alice)
    page = words(client.get("/review/"))
    assert '<a href="/review/?prompt=support">Support</a>' in page and "<td>1</td>" in page

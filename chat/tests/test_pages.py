"""Pages: login, the conversation list, new, rename, system prompt, delete, message partials."""

import pytest

from chat.models import Conversation, Message
from chat.services import conversation_create, message_append

pytestmark = pytest.mark.django_db


@pytest.fixture
def alices_conversation(alice):
    conversation = conversation_create(owner=alice, title="Alice's plans", system_prompt="Be brief.")
    message_append(conversation=conversation, role="user", content="Hello **world**")
    return conversation


def page_urls(conversation):
    message = conversation.messages.first()
    return [
        ("get", f"/chat/{conversation.pk}/"),
        ("get", f"/chat/{conversation.pk}/messages/{message.pk}/"),
        ("post", f"/chat/{conversation.pk}/rename/"),
        ("post", f"/chat/{conversation.pk}/system-prompt/"),
        ("post", f"/chat/{conversation.pk}/delete/"),
    ]


def test_every_chat_page_requires_login(client, alices_conversation):
    for method, url in [
        ("get", "/chat/"),
        ("post", "/chat/new/"),
        ("get", "/chat/model-status/"),
        *page_urls(alices_conversation),
    ]:
        response = getattr(client, method)(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url


def test_someone_elses_conversation_is_not_found_on_every_page(client, bob, alices_conversation):
    client.force_login(bob)
    for method, url in page_urls(alices_conversation):
        assert getattr(client, method)(url, {"title": "mine now", "system_prompt": "x"}).status_code == 404, url
    alices_conversation.refresh_from_db()
    assert alices_conversation.title == "Alice's plans" and alices_conversation.system_prompt == "Be brief."


def test_the_list_shows_only_my_conversations(client, alice, bob, alices_conversation):
    conversation_create(owner=bob, title="Bob's secret")
    client.force_login(alice)
    page = client.get("/chat/").content.decode()
    assert "Alice&#x27;s plans" in page and "Bob&#x27;s secret" not in page


def test_the_list_runs_a_fixed_number_of_queries(client, alice, django_assert_max_num_queries):
    for n in range(30):
        conversation_create(owner=alice, title=f"chat {n}")
    client.force_login(alice)
    with django_assert_max_num_queries(5):  # session, user, count and page of conversations, workers
        client.get("/chat/")


def test_new_creates_a_conversation_and_opens_it(client, alice):
    client.force_login(alice)
    assert client.get("/chat/new/").status_code == 405
    response = client.post("/chat/new/")
    conversation = Conversation.objects.get(owner=alice)
    assert response.status_code == 302 and response["Location"] == f"/chat/{conversation.pk}/"
    page = client.get(response["Location"]).content.decode()
    assert f'data-ws-path="/ws/chat/{conversation.pk}/"' in page
    assert 'aria-label="Message"' in page and ">Send<" in page and ">Stop<" in page


def test_rename_returns_the_title_partial(client, alice, alices_conversation):
    client.force_login(alice)
    response = client.post(
        f"/chat/{alices_conversation.pk}/rename/", {"title": "  Trip   to Lisbon "}, headers={"HX-Request": "true"}
    )
    assert 'value="Trip to Lisbon"' in response.content.decode()
    assert Conversation.objects.get(pk=alices_conversation.pk).title == "Trip to Lisbon"
    response = client.post(f"/chat/{alices_conversation.pk}/rename/", {"title": " "}, headers={"HX-Request": "true"})
    assert "needs a title" in response.content.decode()


def test_the_system_prompt_is_saved(client, alice, alices_conversation):
    client.force_login(alice)
    response = client.post(f"/chat/{alices_conversation.pk}/system-prompt/", {"system_prompt": "Answer in French."})
    assert "Saved" in response.content.decode()
    assert Conversation.objects.get(pk=alices_conversation.pk).system_prompt == "Answer in French."


def test_delete_removes_the_conversation_and_its_messages(client, alice, alices_conversation):
    client.force_login(alice)
    response = client.post(f"/chat/{alices_conversation.pk}/delete/", headers={"HX-Request": "true"})
    assert response["HX-Redirect"] == "/chat/"
    assert not Conversation.objects.exists() and not Message.objects.exists()


def test_messages_render_markdown_and_never_run_scripts(client, alice, alices_conversation):
    message = message_append(
        conversation=alices_conversation,
        role="assistant",
        content='# Title\n\n<script>alert(1)</script> <img src=x onerror="alert(2)">\n\n'
        "[click](javascript:alert(3)) and `code`",
    )
    client.force_login(alice)
    html = client.get(f"/chat/{alices_conversation.pk}/messages/{message.pk}/").content.decode()
    body = html.split('class="message__body markdown">')[1].split("</div>")[0]
    assert "<h1>Title</h1>" in body and "<code>code</code>" in body
    assert "<script" not in body and "<img" not in body and 'href="javascript' not in body
    assert "&lt;script&gt;" in body  # shown as text
    assert 'data-role="assistant"' in html and 'data-status="complete"' in html


def test_the_admin_site_is_for_staff_only(client, alice, admin_client):
    client.force_login(alice)
    assert client.get("/admin/").status_code == 302
    assert admin_client.get("/admin/chat/conversation/").status_code == 200


def test_login_page_logs_in_and_goes_to_the_chat(client, alice):
    assert 'name="username"' in client.get("/accounts/login/").content.decode()
    response = client.post("/accounts/login/", {"username": "alice", "password": "alice-password-1"})
    assert response.status_code == 302 and response["Location"] == "/chat/"
    assert client.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code == 200


def test_the_sampling_heading_shows_the_values_in_effect_and_follows_a_save(client, alice):
    from prompts.services import prompt_create

    prompt = prompt_create(
        owner=alice,
        name="Orders",
        slug="orders",
        version={"instructions": "Be brief.", "template": "{{ order }}", "max_new_tokens": 64},
    )
    conversation = Conversation.objects.create(
        owner=alice,
        title="From a prompt",
        prompt_version=prompt.versions.get(),
        parameters={"temperature": 0.2, "top_p": 0.9},
    )
    client.force_login(alice)
    page = client.get(f"/chat/{conversation.pk}/").content.decode()
    assert '>Sampling · <span class="sampling-summary__values">T 0.2 · top-p 0.9 · 64 tokens</span>' in page
    saved = client.post(
        f"/chat/{conversation.pk}/sampling/",
        {"temperature": "0.7", "max_new_tokens": "256", "seed": "7", "stop": "END"},
        headers={"HX-Request": "true"},
    ).content.decode()
    # The answer carries the heading too (swapped out of band): the values the next reply uses.
    assert 'id="sampling-summary" hx-swap-oob="true"' in saved
    assert "T 0.7 · top-p" in saved and "· 256 tokens · seed 7 · 1 stop sequence<" in saved

"""No page shows template syntax: every template's text parses as Django means it to (a `{# #}`
comment is one line only; a `{{`, `{%` or `{#` left in the text reaches the page as it is
written), and every page a person can open, filled with real data, has none of `{# #} {% %} {{ }}`
in its text, except inside code and preformatted text, where people and help texts write them."""

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.template.base import Lexer, TokenType
from django.test import Client, RequestFactory

REPO = Path(__file__).resolve().parent.parent
TEMPLATE_SYNTAX = re.compile(r"\{#|#\}|\{%|%\}|\{\{|\}\}")
OPENING = re.compile(r"\{#|\{%|\{\{")  # a lone `}}` is JSON's (a placeholder's example schema)


def templates() -> list[Path]:
    folders = [Path(folder) for folder in settings.TEMPLATES[0]["DIRS"]]
    folders += [path for path in REPO.glob("*/templates") if path.is_dir()]
    found = sorted({path for folder in folders for path in folder.rglob("*.html")})
    assert len(found) > 80, folders  # the check reads the studio's templates, not an empty folder
    return found


def test_every_comment_opened_on_a_line_is_closed_on_that_line():
    # Django's {# #} comment is one line only: one that goes on to the next line is printed, as the
    # Pin and Archive buttons' note was on every chat page.
    unclosed = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()[:80]}"
        for path in templates()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "{#" in line and "#}" not in line.split("{#", 1)[1]
    ]
    assert not unclosed, "a {# #} comment runs over a line (use {% comment %}…{% endcomment %}):\n" + "\n".join(
        unclosed
    )


def test_no_template_text_holds_syntax_django_leaves_as_text():
    # What the lexer does not read as a tag, a variable or a comment is printed: a `{{`, `{%` or
    # `{#` in it (a tag or a comment split over lines, a `}` short) is a mistake, unless it is
    # inside {% comment %} or {% verbatim %}.
    mistakes = []
    for path in templates():
        source, skipping = path.read_text(), None
        for token in Lexer(source).tokenize():
            if token.token_type == TokenType.BLOCK:
                name = token.contents.split()[0] if token.contents else ""
                if skipping is None and name in ("comment", "verbatim"):
                    skipping = "end" + name
                elif name == skipping:
                    skipping = None
            elif token.token_type == TokenType.TEXT and skipping is None and OPENING.search(token.contents):
                line = source[: source.find(token.contents)].count("\n") + 1
                found = OPENING.search(token.contents).group()
                mistakes.append(f"{path.relative_to(REPO)}:{line}: {found!r} printed as text")
    assert not mistakes, "\n".join(mistakes)


class VisibleText(HTMLParser):
    """A page's text as a person reads it (text and the title, placeholder, alt and aria-label
    attributes), leaving out scripts, styles, and code, preformatted text, text areas and a
    diff's cells, which show what people wrote (prompt templates have `{{ variables }}`)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
    VERBATIM = {"script", "style", "pre", "code", "textarea"}
    SHOWN_ATTRIBUTES = ("title", "placeholder", "alt", "aria-label")

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open = []  # (tag, leaves its text out)
        self.parts = []

    def skipping(self) -> bool:
        return any(skip for _tag, skip in self.open)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        skip = tag in self.VERBATIM or "diff__cell" in (attributes.get("class") or "").split()
        if not (skip or self.skipping()):
            self.parts += [attributes[name] for name in self.SHOWN_ATTRIBUTES if attributes.get(name)]
        if tag not in self.VOID:
            self.open.append((tag, skip))

    def handle_startendtag(self, tag, attrs):
        if not self.skipping():
            self.parts += [value for name, value in attrs if name in self.SHOWN_ATTRIBUTES and value]

    def handle_endtag(self, tag):
        for index in range(len(self.open) - 1, -1, -1):
            if self.open[index][0] == tag:
                del self.open[index:]
                return

    def handle_data(self, data):
        if not self.skipping():
            self.parts.append(data)


def template_syntax_in(html: str) -> list[str]:
    reader = VisibleText()
    reader.feed(html)
    reader.close()
    return [re.sub(r"\s+", " ", part).strip()[:120] for part in reader.parts if TEMPLATE_SYNTAX.search(part)]


def test_the_reader_finds_what_the_chat_page_printed_and_leaves_code_alone():
    page = (
        "<div>{# Both buttons stay disabled until an answer\n is swapped in #}</div><pre>{{ order }}</pre>"
        '<p>Use <code>{% templatetag openvariable %}</code><br>here</p><td class="diff__cell">{{ x }}</td>'
        '<input placeholder="{{ oops }}">'
    )
    assert template_syntax_in(page) == ["{# Both buttons stay disabled until an answer is swapped in #}", "{{ oops }}"]


ORDER_VERSION = {
    "instructions": "Reply with JSON only.",
    "template": "Order: {{ order }}",
    "max_new_tokens": 16,
    "examples": [{"variables": {"order": "2 figs"}, "output": '{"item": "fig", "quantity": 2}'}],
}
MANUAL = (
    "# Lumo kettle\n\nThe indicator ring glows amber while the kettle descales.\n\n"
    "| part | number |\n| --- | --- |\n| lid | ZX-4411 |\n\n```\nkettle --descale\n```\n"
)


@pytest.fixture
def studio_data(carol, alice, settings, tmp_path):
    """Everything a page can show, made by carol (staff, so every page is hers to open)."""
    from chat.models import Conversation, Message
    from chat.services import conversation_attach, message_append
    from evals.models import Evaluation, EvaluationResult, FailureCase, ImportDraft
    from evals.services import cases_create
    from finetune.models import FineTuneJob
    from knowledge.ingestion import ingest_document
    from knowledge.services import documents_add, knowledge_base_create
    from prompts.services import prompt_create, version_create
    from studio.jobs import JobStatus

    settings.KNOWLEDGE_FILES_DIR = tmp_path / "knowledge"
    prompt = prompt_create(owner=carol, name="Order JSON", slug="order-json", version=dict(ORDER_VERSION))
    first = prompt.versions.get()
    second = version_create(
        prompt=prompt,
        author=carol,
        fields={
            **first.editable_fields(),
            "instructions": "Reply with JSON only, on one line.",
            "commit_message": "One line",
        },
    )
    base = knowledge_base_create(owner=carol, name="Kettle manual", description="The Lumo kettle")
    document = documents_add(
        user=carol, knowledge_base=base, files=[SimpleUploadedFile("kettle.md", MANUAL.encode(), "text/markdown")]
    )[0].document
    ingest_document(document.pk)
    chat = Conversation.objects.create(
        owner=carol, title="Pears", system_prompt="Be brief.", parameters={"temperature": 0.2}
    )
    conversation_attach(conversation=chat, kind="knowledge_base", item_id=base.pk)
    message_append(conversation=chat, role="user", content="Where is my order?")
    message_append(
        conversation=chat,
        role="assistant",
        status=Message.Status.COMPLETE,
        model_name="tiny",
        content="It is **on its way**.\n\n```python\nprint({'pears': 3})\n```",
    )
    from_prompt = Conversation.objects.create(
        owner=carol,
        title="Order JSON v2",
        prompt_version=second,
        system_prompt=second.instructions,
        prompt_variables={"order": "3 pears"},
    )
    message_append(conversation=from_prompt, role="user", content="Order: 3 pears")
    message_append(conversation=from_prompt, role="assistant", status=Message.Status.COMPLETE, content="pears")
    cases = cases_create(
        user=carol,
        source=FailureCase.Source.API,
        rows=[
            {
                "prompt": "order-json",
                "input": {"order": f"{n} pears"},
                "actual": "pears",
                "expected": '{"item": "pear", "quantity": %d}' % n,
                "tags": ["orders"],
            }
            for n in range(3)
        ],
    )
    evaluations = []
    for run in range(2):
        evaluation = Evaluation.objects.create(
            prompt_version=second,
            model_name="tiny",
            created_by=carol,
            scorers=[{"type": "json_equal", "threshold": 1.0}],
            status=JobStatus.FINISHED,
            total=3,
            done=3,
            passed=run,
            case_ids=[case.pk for case in cases],
        )
        for n, case in enumerate(cases):
            EvaluationResult.objects.create(
                evaluation=evaluation,
                case=case,
                output="pears",
                scores={"json_equal": float(run and not n)},
                passed=bool(run and not n),
            )
        evaluations.append(evaluation)
    job = FineTuneJob.objects.create(
        name="order-json-lora",
        base_model="tiny",
        prompt=prompt,
        created_by=carol,
        status=JobStatus.FINISHED,
        total=4,
        done=4,
        metrics=[{"step": step, "loss": 2.0 - step / 4, "epoch": step / 4} for step in range(1, 5)],
    )
    draft = ImportDraft.objects.create(
        owner=carol, filename="orders.csv", columns=["order", "gold"], rows=[["2 figs", "figs"], ["3 kiwis", ""]]
    )
    return {
        "chat": chat,
        "from_prompt": from_prompt,
        "case": cases[0],
        "evaluations": evaluations,
        "job": job,
        "draft": draft,
        "base": base,
        "document": document,
    }


def pages_a_person_opens(data) -> list[str]:
    chat, base = data["chat"].pk, data["base"].pk
    first, second = (evaluation.pk for evaluation in data["evaluations"])
    return [
        "/chat/",
        f"/chat/{chat}/",
        f"/chat/{data['from_prompt'].pk}/",
        "/chat/?kind=archived",
        "/chat/search/",
        "/chat/search/?q=order",
        "/chat/import/",
        f"/chat/{chat}/sampling/",
        f"/chat/{chat}/knowledge/suggest/?q=",
        "/chat/model-status/",
        "/chat/defaults/",
        "/prompts/",
        "/prompts/new/",
        "/prompts/order-json/",
        "/prompts/order-json/versions/1/",
        "/prompts/order-json/playground/",
        "/prompts/order-json/versions/new/",
        "/prompts/order-json/diff/?from=1&to=2",
        "/prompts/order-json/history/",
        "/cases/",
        "/cases/new/?prompt=order-json",
        f"/cases/{data['case'].pk}/",
        "/cases/import/",
        f"/cases/import/{data['draft'].pk}/",
        "/evaluations/",
        "/evaluations/new/?prompt=order-json",
        f"/evaluations/{first}/",
        f"/evaluations/compare/?a={first}&b={second}",
        "/fine-tunes/",
        "/fine-tunes/new/?prompt=order-json",
        f"/fine-tunes/{data['job'].pk}/",
        "/knowledge/",
        f"/knowledge/{base}/",
        f"/knowledge/{base}/documents/{data['document'].pk}/",
        f"/knowledge/{base}/search/?q=kettle",
        "/accounts/settings/",
        "/no-such-page/",
    ]


@pytest.mark.django_db
def test_no_page_a_person_opens_shows_template_syntax(client, carol, alice, studio_data):
    shown = {}
    client.force_login(carol)
    for path in pages_a_person_opens(studio_data):
        response = client.get(path)
        assert response.status_code in (200, 404), (path, response.status_code)
        shown[path] = response.content.decode()
    # Fragments htmx swaps in after an action.
    chat = studio_data["chat"]
    shown["pin"] = client.post(
        f"/chat/{chat.pk}/pin/", {"pinned": "true"}, headers={"HX-Request": "true"}
    ).content.decode()
    shown["preview"] = client.post(
        "/prompts/order-json/playground/preview/", {"order": "4 pears"}, headers={"HX-Request": "true"}
    ).content.decode()
    # As someone else: a page that is not theirs, a staff page; logged out: login and the logged-out page.
    other = Client()
    other.force_login(alice)
    shown["not found for alice"] = other.get(f"/chat/{chat.pk}/").content.decode()
    shown["staff only"] = other.get("/fine-tunes/").content.decode()
    shown["logged out"] = other.post("/accounts/logout/", follow=True).content.decode()
    shown["login"] = Client().get("/accounts/login/").content.decode()
    from studio.views import server_error

    shown["server error"] = server_error(RequestFactory().get("/chat/")).content.decode()
    assert len(shown) > 40
    found = {path: template_syntax_in(html) for path, html in shown.items()}
    assert not any(found.values()), {path: text for path, text in found.items() if text}
    # The walk saw real data: the chat's reply, the document's passage, the evaluation's cases.
    assert "on its way" in shown[f"/chat/{chat.pk}/"]
    assert "glows amber" in shown[f"/knowledge/{studio_data['base'].pk}/documents/{studio_data['document'].pk}/"]
    assert "json_equal" in shown[f"/evaluations/{studio_data['evaluations'][0].pk}/"]

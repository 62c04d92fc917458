"""Personas: alice owns the prompt "triage" (support tickets into JSON), bob is another user who
may see it but not edit it. Cases are shared team data unless a test says otherwise."""

import pytest

from accounts.services import api_token_create
from evals import services as case_services
from evals.models import FailureCase
from prompts import services as prompt_services

TRIAGE_VERSION = {
    "instructions": 'Reply with JSON only: {"team": <billing|tech|sales>, "urgent": <true|false>}.',
    "template": "Ticket: {{ ticket }}",
    "commit_message": "First version",
    "max_new_tokens": 12,
}
TICKETS = [
    ("I was charged twice this month", "billing", "false"),
    ("The app crashes on start", "tech", "true"),
    ("Can I get a quote for 50 seats", "sales", "false"),
    ("Refund my last invoice now", "billing", "true"),
    ("Login page shows error 500", "tech", "true"),
    ("Do you offer a discount for schools", "sales", "false"),
    ("My card was declined", "billing", "false"),
    ("Sync stopped working since update", "tech", "false"),
    ("Want to upgrade to enterprise", "sales", "false"),
]


@pytest.fixture
def triage_version(alice):
    prompt = prompt_services.prompt_create(owner=alice, name="Triage", slug="triage", version=dict(TRIAGE_VERSION))
    return prompt.versions.get(number=1)


@pytest.fixture
def make_cases(alice, triage_version):
    """make_cases(tickets, user=alice, **fields): shared cases of triage v1, one per ticket."""

    def make(tickets=TICKETS, user=None, **fields):
        rows = [
            {
                "prompt": "triage",
                "version": 1,
                "input": {"ticket": text},
                "actual": "?",
                "expected": f'{{"team": "{team}", "urgent": {urgent}}}',
                **fields,
            }
            for text, team, urgent in tickets
        ]
        return case_services.cases_create(user=user or alice, rows=rows, source=FailureCase.Source.API)

    return make


@pytest.fixture
def token(alice):
    return api_token_create(user=alice, name="ci")[1]


@pytest.fixture
def bob_token(bob):
    return api_token_create(user=bob, name="ci")[1]

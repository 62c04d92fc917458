"""Personas: carol is staff and fine-tunes; alice (a plain user) owns the prompt and its cases."""

import pytest

from evals import services as case_services
from evals.models import FailureCase
from prompts import services as prompt_services


@pytest.fixture
def order_prompt(alice):
    return prompt_services.prompt_create(
        owner=alice,
        name="Order JSON",
        slug="order-json",
        version={"instructions": "Reply with JSON only.", "template": "Order: {{ order }}", "max_new_tokens": 16},
    )


@pytest.fixture
def cases(alice, order_prompt):
    rows = [
        {
            "prompt": "order-json",
            "input": {"order": f"{n} pears"},
            "actual": "pears",
            "expected": f'{{"item": "pear", "quantity": {n}}}',
            "split": "eval" if n % 5 == 0 else "train",
        }
        for n in range(12)
    ]
    return case_services.cases_create(user=alice, rows=rows, source=FailureCase.Source.API)

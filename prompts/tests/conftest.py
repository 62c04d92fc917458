"""Personas for the prompt library: alice owns prompts, bob is another user, carol is staff.

alice, bob and carol come from the project's conftest.py (built by hand). Prompts are built through `services`, as a person's edits would build them.
"""

import pytest

from prompts import services

FIRST_VERSION = {
    "instructions": "Answer in English.\nBe brief.",
    "template": "Summarize for {{ audience }}:\n{{ text }}",
    "examples": [{"input": "The meeting moved from Monday to Tuesday at 10.", "output": "Meeting: Tuesday 10:00."}],
    "model": "",
    "temperature": 0.2,
    "top_p": 0.9,
    "max_new_tokens": 64,
    "stop": ["###"],
    "commit_message": "First version",
}

# Changes one word of the instructions and adds an example; parameters stay the same.
SECOND_VERSION = {
    **FIRST_VERSION,
    "instructions": "Answer in English.\nBe concise.",
    "examples": FIRST_VERSION["examples"]
    + [{"input": "Lunch is cancelled because the kitchen floods.", "output": "No lunch: kitchen flooded."}],
    "commit_message": "Concise, and a second example",
}


@pytest.fixture
def make_prompt():
    """make_prompt(owner, slug, versions=[fields, ...]): a prompt whose versions 1..N are `versions`."""

    def make(owner, slug="meeting-notes", versions=(FIRST_VERSION,), name=None):
        first, *rest = versions
        prompt = services.prompt_create(
            owner=owner,
            name=name or slug.replace("-", " ").capitalize(),
            slug=slug,
            description=f"Test prompt {slug}",
            version=dict(first),
        )
        for fields in rest:
            services.version_create(prompt=prompt, author=owner, fields=dict(fields))
        return prompt

    return make


@pytest.fixture
def notes(alice, make_prompt):
    """alice's prompt "meeting-notes" with two versions (SECOND_VERSION is the newest)."""
    return make_prompt(alice, versions=(FIRST_VERSION, SECOND_VERSION))

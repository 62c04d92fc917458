"""What an embedder fine-tune trains on and what it is measured on, for one knowledge base.

Training pairs are (question, passage), the passage as the base embeds it (its heading trail, a
blank line, its text: ingestion's Piece.embedding_text, the trail uncut):
- **judged**: failure cases of the train split, approved, that the launching person may see, whose
  right passages were judged; the question is what the case's retrieval searched for
  (evals.prompting.retrieval_query), each right passage found in the base's active index a pair;
- **tests**: the questions of the base's retrieval tests with their right passages, except the
  held-out ones;
- **generated**: for a seeded sample of the base's passages, a question a served model wrote
  (the job asks for them through the model workers).

Held out: a fixed, seeded share of one retrieval test's questions, never trained on; no training
pair has the same question (whitespace and case aside) as a held-out one, whatever its source.
"""

from __future__ import annotations

import bisect
import random
import re
from dataclasses import dataclass

from evals.models import FailureCase
from evals.prompting import retrieval_query
from evals.selectors import cases_visible_to
from knowledge.models import Chunk, Document, KnowledgeBase, RetrievalQuestion, RetrievalTest
from knowledge.search import MAX_QUERY_CHARS
from studio.llm.embedder_training import Pair

MIN_PAIRS = 20  # judged passages and test questions a fine-tune needs, unless questions are generated
# Trained on at most: a step of 32 pairs with 200-token passages took 8-11 s on 2 loaded CPU cores,
# so 5,000 pairs are 2 epochs of 313 steps, about 50 minutes.
MAX_PAIRS = 5_000
DEFAULT_GENERATED_CHUNKS, MAX_GENERATED_CHUNKS = 200, 2_000
GENERATION_PROMPT = (
    "Write one question that the passage below answers, as a person looking for it would ask. "
    "Write only the question.\n\nPassage:\n{passage}"
)
GENERATION_MAX_NEW_TOKENS = 64
GENERATION_TEMPERATURE = 0.7
MAX_GENERATED_QUESTION_CHARS = 300


def normalised(text) -> str:
    return " ".join(str(text or "").split()).casefold()


@dataclass(frozen=True)
class BasePassage:
    chunk_id: int
    text: str
    heading: str  # the heading trail, the document's title first
    document: str  # its document's name
    page: int | None

    @property
    def embedding_text(self) -> str:
        """What ingestion embeds for it: the trail, a blank line, the text."""
        return f"{self.heading}\n\n{self.text}" if self.heading else self.text


class BasePassages:
    """The base's active index in memory (ready documents), and the passage a judgment or a test names."""

    def __init__(self, knowledge_base: KnowledgeBase):
        rows = (
            Chunk.objects.active()
            .filter(knowledge_base=knowledge_base, document__status=Document.Status.READY)
            .order_by("pk")
            .values_list("pk", "text", "heading", "document__name", "page")
        )
        self.passages = [BasePassage(*row) for row in rows]
        self.by_id = {passage.chunk_id: passage for passage in self.passages}
        # Normalised texts joined by \x00 (no passage holds one: a match never spans two chunks),
        # and where each starts, to find the chunk that holds a passage with one search.
        texts = [normalised(passage.text) for passage in self.passages]
        self.starts = []
        at = 0
        for text in texts:
            self.starts.append(at)
            at += len(text) + 1
        self.joined = "\x00".join(texts)

    def __len__(self) -> int:
        return len(self.passages)

    def find(self, item: dict) -> BasePassage | None:
        """The passage a judgment's item or a test's passage names: {"chunk"} (of this base), {"text"}
        (the chunk that holds it, or its first or last half: a chunk boundary may cut it), or
        {"document", "page"} (that page's first chunk; a document without a page names too much)."""
        if not isinstance(item, dict):
            return None
        if isinstance(item.get("chunk"), int) and item["chunk"] in self.by_id:
            return self.by_id[item["chunk"]]
        text = normalised(item.get("text"))
        if text:
            words = text.split()
            half = (len(words) + 1) // 2
            for piece in (text, " ".join(words[:half]), " ".join(words[len(words) - half :])):
                at = self.joined.find(piece)
                if at >= 0:
                    return self.passages[bisect.bisect_right(self.starts, at) - 1]
            return None
        if item.get("document") and item.get("page") is not None:
            document = normalised(item["document"])
            return next(
                (p for p in self.passages if normalised(p.document) == document and p.page == item["page"]), None
            )
        return None


def held_out_ordinals(question_count: int, share: float, *, seed: int = 0) -> list[int]:
    """The ordinals of a test's questions kept for measuring: `share` of them (at least one), chosen
    by a seeded shuffle, so the same test, share and seed hold out the same questions."""
    ordinals = list(range(question_count))
    random.Random(f"held-out:{seed}").shuffle(ordinals)
    return sorted(ordinals[: max(1, round(question_count * share))]) if question_count else []


@dataclass(frozen=True)
class HeldOut:
    questions: list[tuple[str, list[dict]]]  # (question, right passages), as retrieval_tests measures them

    @property
    def texts(self) -> set[str]:
        return {normalised(question) for question, _ in self.questions}


def held_out_questions(test: RetrievalTest, ordinals: list[int]) -> HeldOut:
    rows = RetrievalQuestion.objects.filter(test=test, ordinal__in=ordinals).order_by("ordinal")
    return HeldOut([(row.question, row.passages) for row in rows])


@dataclass
class TrainingPairs:
    judged: list[Pair]
    tests: list[Pair]
    generated: list[Pair]

    @property
    def all(self) -> list[Pair]:
        """Each pair once, in a fixed order, at most MAX_PAIRS (judged first: a person chose them)."""
        return list(dict.fromkeys(self.judged + self.tests + self.generated))[:MAX_PAIRS]

    @property
    def chosen(self) -> int:
        """Pairs a person chose (judged passages and test questions), each once."""
        return len(dict.fromkeys(self.judged + self.tests))

    def counts(self) -> dict:
        return {
            "judged": len(self.judged),
            "tests": len(self.tests),
            "generated": len(self.generated),
            "total": len(self.all),
        }


def judged_pairs(*, user, passages: BasePassages, excluded: set[str]) -> list[Pair]:
    """Right passages of this base judged on train-split, approved failure cases `user` may see (a
    held-out case's judgment is never trained on: evaluations measure retrieval with those)."""
    cases = (
        cases_visible_to(user)
        .filter(
            retrieval_judgment__has_key="right",
            split=FailureCase.Split.TRAIN,
            review=FailureCase.Review.APPROVED,
        )
        .select_related("prompt_version")
        .order_by("created_at", "id")
    )
    pairs = []
    for case in cases.iterator(chunk_size=500):
        right = case.retrieval_judgment.get("right") or []
        question = retrieval_query(case, case.prompt_version).strip()[:MAX_QUERY_CHARS] if right else ""
        if not question or normalised(question) in excluded:
            continue
        for item in right:
            found = passages.find(item)
            if found is not None:
                pairs.append(Pair(question, found.embedding_text))
    return list(dict.fromkeys(pairs))


def retrieval_test_pairs(*, knowledge_base: KnowledgeBase, passages: BasePassages, held_out: HeldOut) -> list[Pair]:
    """The questions of the base's retrieval tests and their passages, held-out questions left out."""
    excluded = held_out.texts
    pairs = []
    rows = RetrievalQuestion.objects.filter(test__knowledge_base=knowledge_base).order_by("test_id", "ordinal")
    for question, right in rows.values_list("question", "passages").iterator(chunk_size=500):
        if normalised(question) in excluded:
            continue
        for item in right:
            found = passages.find(item)
            if found is not None:
                pairs.append(Pair(question, found.embedding_text))
    return list(dict.fromkeys(pairs))


def chosen_pairs(*, user, knowledge_base: KnowledgeBase, passages: BasePassages, held_out: HeldOut) -> TrainingPairs:
    return TrainingPairs(
        judged=judged_pairs(user=user, passages=passages, excluded=held_out.texts),
        tests=retrieval_test_pairs(knowledge_base=knowledge_base, passages=passages, held_out=held_out),
        generated=[],
    )


def too_few_pairs(chosen: int) -> str:
    """The refusal's sentence when a fine-tune has fewer than MIN_PAIRS pairs a person chose."""
    return (
        f"needs at least {MIN_PAIRS} judged passages or test questions (has {chosen}), or ask for "
        "generated questions (a served model writes one for each of the base's passages)"
    )


# --- generated questions ------------------------------------------------------------------------


def generation_sample(passages: BasePassages, count: int, *, seed: int = 0) -> list[BasePassage]:
    """`count` of the base's passages (all of them when it has fewer), by a seeded draw."""
    chosen = list(passages.passages)
    random.Random(f"generate:{seed}").shuffle(chosen)
    return sorted(chosen[:count], key=lambda passage: passage.chunk_id)


def generation_request(passage: BasePassage) -> list[dict]:
    return [{"role": "user", "content": GENERATION_PROMPT.format(passage=passage.text)}]


def generation_parameters(seed: int) -> dict:
    return {
        "max_new_tokens": GENERATION_MAX_NEW_TOKENS,
        "temperature": GENERATION_TEMPERATURE,
        "top_p": 0.95,
        "stop": [],
        "seed": seed,
        "min_new_tokens": 1,
    }


_LABEL = re.compile(r"^\s*(?:\d+[.)]\s*|[-*]\s*|(?:question|q)\s*[:.]\s*)+", re.IGNORECASE)


def generated_question(reply: str, passage: BasePassage) -> str:
    """The question in a model's reply: its first line, without a label ("Question:", "1.") or
    quotes; "" when that is no usable question (under three words, too long, or the passage's own
    opening words)."""
    line = next((line for line in (reply or "").splitlines() if line.strip()), "")
    question = _LABEL.sub("", line).strip().strip("\"'“”").strip()
    if not 3 <= len(question.split()) <= 60 or len(question) > MAX_GENERATED_QUESTION_CHARS:
        return ""
    if normalised(passage.text).startswith(normalised(question)):
        return ""  # it copied the passage
    return question

"""The embedder's training core (studio/llm/embedder_training.py), without Django: its in-batch
loss, its settings' checks, its step count, and that reading its settings loads no torch."""

import subprocess
import sys
from pathlib import Path

import pytest

from studio.llm.embedder_training import EmbedderTrainingConfig, EmbedderTrainingError, in_batch_loss, steps_for

REPO = Path(__file__).resolve().parent.parent


def test_a_passage_twice_in_a_batch_is_never_a_negative_of_its_own_question():
    import torch

    questions = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.1]]), dim=-1)
    passages = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05], [1.0, 0.05]]), dim=-1)  # the same text
    as_two = in_batch_loss(questions, passages, [0, 1])  # each question's copy is the other's negative
    as_one = in_batch_loss(questions, passages, [0, 0])
    assert abs(float(as_two) - float(torch.log(torch.tensor(2.0)))) < 1e-4 and float(as_one) < 1e-6


def test_a_second_passage_of_the_same_question_is_not_its_negative():
    import torch

    questions = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), dim=-1)  # one question twice
    passages = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1]]), dim=-1)  # its two passages
    assert float(in_batch_loss(questions, passages, [0, 1], [0, 0])) < 1e-6
    assert float(in_batch_loss(questions, passages, [0, 1], [0, 1])) > 0.5


@pytest.mark.parametrize(
    ("setting", "value"),
    [("epochs", 0), ("epochs", 2.5), ("learning_rate", 0.1), ("batch_size", 1), ("warmup_share", 1.0), ("seed", -1)],
)
def test_a_setting_out_of_range_is_refused_by_name(setting, value):
    with pytest.raises(EmbedderTrainingError) as refused:
        EmbedderTrainingConfig(**{setting: value})
    assert refused.value.field == setting and setting in str(refused.value)


def test_a_last_batch_of_one_pair_is_dropped():
    assert steps_for(33, EmbedderTrainingConfig(batch_size=16, epochs=2)) == 4  # 16 + 16 (+ 1 dropped), twice
    assert steps_for(34, EmbedderTrainingConfig(batch_size=16, epochs=1)) == 3


def test_its_settings_are_read_without_django_or_torch():
    code = (
        "import sys\n"
        "from studio.llm.embedder_training import EmbedderTrainingConfig\n"
        "EmbedderTrainingConfig()\n"
        "assert not {'django', 'torch', 'transformers'} & set(sys.modules), sorted(sys.modules)[:5]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]

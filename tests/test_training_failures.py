"""A failed training says what to change, classified by the exception's type (never its words)."""

import errno

import torch

from studio.llm.training import TrainingConfig, TrainingConfigError, describe_failure


def test_it_classifies_a_failure_by_its_type():
    config = TrainingConfig(base_model_folder="-", batch_size=8)
    assert (
        describe_failure(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), config)["kind"]
        == "oom"
    )
    assert "a smaller batch size (now 8" in describe_failure(MemoryError(), config)["message"]
    assert describe_failure(OSError(errno.ENOSPC, "No space left on device"), config)["kind"] == "disk"
    # Words alone decide nothing: this is no memory the training lacked.
    assert (
        describe_failure(RuntimeError("mmap: out of memory-mapped regions in the tokenizer cache"), config)["kind"]
        == "error"
    )


def test_a_setting_out_of_range_names_its_field():
    try:
        TrainingConfig(base_model_folder="-", lora_rank=0)
    except TrainingConfigError as exc:
        assert exc.field == "lora_rank"
    else:
        raise AssertionError("lora_rank=0 was taken")

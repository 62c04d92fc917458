"""The model runtime: load a model, render chat prompts, stream generation.

Deliberately free of Django so it can be used and tested on its own.
"""

from .generation import (
    Generation,
    GenerationSettings,
    GenerationStalledError,
    PromptTooLongError,
    Usage,
    render_prompt_ids,
)
from .loading import BUNDLED_MODEL, LoadedModel, ModelLoadError, PromptCounter, load_model, load_prompt_counter

__all__ = [
    "BUNDLED_MODEL",
    "Generation",
    "GenerationSettings",
    "GenerationStalledError",
    "LoadedModel",
    "ModelLoadError",
    "PromptCounter",
    "PromptTooLongError",
    "Usage",
    "load_model",
    "load_prompt_counter",
    "render_prompt_ids",
]

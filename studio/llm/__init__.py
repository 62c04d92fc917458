"""The model runtime: load a model, render chat prompts, decode replies in continuous batches.

Deliberately free of Django so it can be used and tested on its own. Names are imported on
first use: the web process reads `studio.llm.adapters` and `studio.llm.counting` without ever
importing torch or transformers (only model and job workers hold model code).
"""

import importlib

_HOMES = {
    "GenerationSettings": "replies",
    "PromptTooLongError": "replies",
    "Usage": "replies",
    "render_prompt_ids": "replies",
    "BatchEngine": "engine",
    "EngineRequest": "engine",
    "reply_once": "engine",
    "BUNDLED_MODEL": "loading",
    "LoadedModel": "loading",
    "ModelLoadError": "loading",
    "load_model": "loading",
    "PromptCounter": "counting",
    "load_prompt_counter": "counting",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'studio.llm' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)

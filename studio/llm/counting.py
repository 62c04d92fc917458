"""Counting prompt tokens where no model is loaded (the web process), without torch or transformers.

The model folder's `tokenizer.json` is read with the `tokenizers` library and its chat template
rendered with Jinja the way transformers renders it (sandboxed, trim_blocks, lstrip_blocks), so
the web process counts the same tokens a worker feeds the model while importing no model code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from .loading import ModelLoadError, prepare_model_folder
from .tools import ToolUse, prompt_messages, template_takes_tools


@dataclass(frozen=True)
class PromptCounter:
    tokenizer: object  # tokenizers.Tokenizer
    template: object  # the compiled chat template
    special_tokens: dict
    name: str
    context_length: int
    takes_tools: bool = False  # the template shows tools its own way (tools.template_takes_tools)

    def render(self, messages: list[dict], *, add_generation_prompt: bool = True, tools: list | None = None) -> str:
        return self.template.render(
            messages=messages, add_generation_prompt=add_generation_prompt, tools=tools, **self.special_tokens
        )

    def count_text(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def count(self, messages: list[dict], *, tool_use: ToolUse | None = None) -> int:
        """Tokens of `messages` through the chat template, ready for a reply (with `tool_use`'s tools
        shown as the worker shows them)."""
        messages, tools = prompt_messages(messages, tool_use, native=self.takes_tools)
        return self.count_text(self.render(messages, tools=tools))


def _raise(message):
    raise TemplateError(message)


def _chat_template(folder: Path, config: dict) -> str | None:
    template_file = folder / "chat_template.jinja"  # transformers 5 keeps it beside the config
    if template_file.exists():
        return template_file.read_text()
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return template


def _token_text(value) -> str:
    return value.get("content", "") if isinstance(value, dict) else (value or "")


def load_prompt_counter(source: str, *, cache_dir: Path) -> PromptCounter | None:
    """The tokenizer of `source`, or None while it would first need a GGUF conversion (the worker does that)."""
    folder, name = prepare_model_folder(source, Path(cache_dir), convert=False)
    if folder is None:
        return None
    folder = Path(folder)
    try:
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        model_config = json.loads((folder / "config.json").read_text())
    except Exception as exc:
        raise ModelLoadError(f"Could not load the tokenizer of {source!r}: {exc}") from exc
    template_text = _chat_template(folder, tokenizer_config)
    if not template_text:
        raise ModelLoadError(f"Model {source!r} has no chat template in its tokenizer; pick an instruct/chat model.")
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    environment.globals.update(raise_exception=_raise, strftime_now=lambda f: datetime.now().strftime(f))
    environment.filters["tojson"] = lambda value, indent=None, **_: json.dumps(value, ensure_ascii=False, indent=indent)
    special = {
        key: _token_text(tokenizer_config.get(key)) for key in ("bos_token", "eos_token", "unk_token", "pad_token")
    }
    return PromptCounter(
        tokenizer=tokenizer,
        template=environment.from_string(template_text),
        special_tokens=special,
        name=name,
        context_length=int(model_config.get("max_position_embeddings", 2048) or 2048),
        takes_tools=template_takes_tools(template_text),
    )

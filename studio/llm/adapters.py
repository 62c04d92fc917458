"""Fine-tuned LoRA adapters on disk, and a served base model that switches between them.

The registry of record is the database (finetune/); the files are what model workers and job
workers read: `<adapters dir>/<name>/` holds peft's adapter files and `studio-model.json`
(`{"name", "base_model"}`). Only adapters trained on the served base model are offered.

One base model is loaded once; adapters are added to it on first use and switched per reply
(`ServedModels.activate`), so serving another fine-tuned model never reloads the base. The
worker writes one reply at a time, so replies for different adapters never share a batch.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from .loading import LoadedModel, ModelLoadError

META_FILE = "studio-model.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def adapter_folders(adapters_dir: Path, base_model: str) -> dict[str, Path]:
    """name → folder of every complete adapter trained on `base_model`."""
    found = {}
    try:
        folders = sorted(Path(adapters_dir).iterdir())
    except OSError:
        return found
    for folder in folders:
        try:
            meta = json.loads((folder / META_FILE).read_text())
        except (OSError, ValueError):
            continue  # still being written, or not ours
        if meta.get("base_model") == base_model and (folder / "adapter_config.json").exists():
            found[meta.get("name", folder.name)] = folder
    return found


def write_meta(folder: Path, *, name: str, base_model: str) -> None:
    # Written last: an adapter is offered only once its files are complete.
    (folder / META_FILE).write_text(json.dumps({"name": name, "base_model": base_model}))


def _module_name(name: str) -> str:
    return "a_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


class ServedModels:
    """The loaded base model and the adapters trained on it, one active at a time; `loaded` is what
    generates (the base, wrapped by peft once the first adapter is asked for)."""

    def __init__(self, loaded: LoadedModel, adapters_dir: Path):
        self.loaded = loaded
        self.base = loaded.model
        self.adapters_dir = Path(adapters_dir)
        self.loaded_adapters: set[str] = set()

    def names(self) -> list[str]:
        return [self.loaded.name, *adapter_folders(self.adapters_dir, self.loaded.name)]

    def prepare(self, name: str) -> str:
        """For a batch that mixes models: the peft adapter name of `name` ("" for the base model),
        loading it beside the others if needed (call it where nothing runs the model meanwhile)."""
        # peft (and torch with it) loads only in the model worker: the web process reads this module's names
        from peft import PeftModel  # noqa: PLC0415

        if name in ("", self.loaded.name):
            return ""
        folder = adapter_folders(self.adapters_dir, self.loaded.name).get(name)
        if folder is None:
            raise ModelLoadError(
                f"The model “{name}” is not available here (deleted, or trained on another base "
                f"model); this worker serves {', '.join(self.names())}."
            )
        module = _module_name(name)
        if not isinstance(self.loaded.model, PeftModel):
            peft_model = PeftModel.from_pretrained(self.base, str(folder), adapter_name=module).eval()
            self.loaded = dataclasses.replace(self.loaded, model=peft_model)
        elif name not in self.loaded_adapters:
            self.loaded.model.load_adapter(str(folder), adapter_name=module)
        self.loaded_adapters.add(name)
        return module

    def activate(self, name: str) -> None:
        """Make `name` (the base model's name, "" for it, or an adapter's) the one model that answers
        next (evaluations, which decode one model at a time)."""
        # peft (and torch with it) loads only in the model worker: the web process reads this module's names
        from peft import PeftModel  # noqa: PLC0415

        module = self.prepare(name)
        if isinstance(self.loaded.model, PeftModel):
            if not module:
                self.loaded.model.base_model.disable_adapter_layers()
                return
            self.loaded.model.base_model.enable_adapter_layers()
            self.loaded.model.set_adapter(module)

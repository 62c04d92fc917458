"""Merging an adapter into its base model (in a job worker: the web process never loads models)."""

import shutil
import zipfile
from pathlib import Path

from django.conf import settings

from studio.llm.training import merge_adapter

from .models import FineTunedModel
from .training_data import base_model_folder


def merged_zip(model: FineTunedModel) -> Path:
    return Path(settings.DATA_DIR) / "merged" / f"{model.name}.zip"


def merge_model(model_id: int) -> None:
    """Base + adapter as one model folder transformers loads alone, zipped for download."""
    model = FineTunedModel.objects.filter(pk=model_id).first()
    if model is None:
        return
    folder = Path(settings.DATA_DIR) / "merged" / model.name
    try:
        shutil.rmtree(folder, ignore_errors=True)
        merge_adapter(
            str(base_model_folder(convert=True)), str(Path(settings.STUDIO_ADAPTERS_DIR) / model.name), str(folder)
        )
        archive = merged_zip(model)
        with zipfile.ZipFile(archive.with_suffix(".partial"), "w", zipfile.ZIP_STORED) as out:
            for file in sorted(folder.rglob("*")):
                if file.is_file():
                    out.write(file, f"{model.name}/{file.relative_to(folder)}")
        archive.with_suffix(".partial").rename(archive)
        FineTunedModel.objects.filter(pk=model_id).update(merge_state="ready", merge_error="")
    except Exception as exc:
        FineTunedModel.objects.filter(pk=model_id).update(merge_state="failed", merge_error=str(exc)[:2000])
    finally:
        shutil.rmtree(folder, ignore_errors=True)

"""`emoreason model export`: a self-contained serving folder from a trained model folder."""
from __future__ import annotations

import shutil
from pathlib import Path

from components.speechlm.io import LEVELS_FILE, TASK_FILE, export_merged
from components.speechlm.pretrain import CLASSIFIER_FILE
from components.speechlm.prosody_vector import NORM_FILE


def export_for_serving(folder: Path, out: Path) -> Path:
    """The model in `folder` with its LoRA adapters merged (`io.export_merged`), plus the files
    prediction reads beside the weights: the task, prosody statistics, levels and the
    encoder's own classifier."""
    if not (folder / TASK_FILE).exists():
        raise FileNotFoundError(f"{folder} is not a trained model folder (no {TASK_FILE})")
    if out.resolve() == folder.resolve():
        raise ValueError("export to another folder: the adapter folder is the training record")
    export_merged(folder, out)
    for name in (TASK_FILE, NORM_FILE, LEVELS_FILE, CLASSIFIER_FILE):
        if (folder / name).exists():
            shutil.copyfile(folder / name, out / name)
    return out

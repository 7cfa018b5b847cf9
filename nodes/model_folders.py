"""Model folders of the pack, registered through ComfyUI's public folder_paths functions.

``models/edloras`` holds concept files. A user's ``extra_model_paths.yaml`` may already have added
``edloras:`` folders before the pack loads; those are kept and the default folder is appended. The host
keeps no extension filter for a folder added this way, so the lists below filter by concept extension.
"""
from __future__ import annotations

import os

import folder_paths

from ..mixofshow_core.formats import CONCEPT_EXTENSIONS

EDLORA_FOLDER = "edloras"


def register_folders() -> None:
    folder_paths.add_model_folder_path(EDLORA_FOLDER, os.path.join(folder_paths.models_dir, EDLORA_FOLDER))


def concept_files() -> list[str]:
    names = folder_paths.get_filename_list(EDLORA_FOLDER)
    return [n for n in names if os.path.splitext(n)[1].lower() in CONCEPT_EXTENSIONS]


def concept_path(name: str) -> str:
    path = folder_paths.get_full_path(EDLORA_FOLDER, name)
    if path is None:
        raise FileNotFoundError(
            f"Concept file '{name}' is not in any models/{EDLORA_FOLDER} folder "
            f"({', '.join(folder_paths.get_folder_paths(EDLORA_FOLDER))}). Copy it there and refresh the page."
        )
    return path


def output_file(kind: str, filename: str, default: str) -> str:
    """``<first folder of kind>/<filename>.safetensors``; the name is reduced to a base name (no paths)."""
    folder = folder_paths.get_folder_paths(kind)[0]
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{os.path.basename(filename.strip()) or default}.safetensors")

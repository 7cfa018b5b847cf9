"""Model folders of the pack, registered with ComfyUI's folder_paths.

``models/edloras`` holds concept files. A user's ``extra_model_paths.yaml`` may already have added
``edloras:`` folders before the pack loads; those are kept and the default folder is appended.
"""
from __future__ import annotations

import os

import folder_paths

from ..mixofshow_core.formats import CONCEPT_EXTENSIONS

EDLORA_FOLDER = "edloras"


def register_folders() -> None:
    default = os.path.join(folder_paths.models_dir, EDLORA_FOLDER)
    paths, extensions = folder_paths.folder_names_and_paths.get(EDLORA_FOLDER, ([], set()))
    paths = list(paths) + ([default] if default not in paths else [])
    folder_paths.folder_names_and_paths[EDLORA_FOLDER] = (paths, set(extensions) | set(CONCEPT_EXTENSIONS))


def concept_files() -> list[str]:
    return folder_paths.get_filename_list(EDLORA_FOLDER)


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

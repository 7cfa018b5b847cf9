"""Import of checkpoints written by the original Mix-of-Show code (spec §1.9).

Layout: ``{"params": {"new_concept_embedding": {word: [L, D]}, "text_encoder": {...}, "unet": {...}}}``.
LoRA keys are ``<module>.lora_down.weight`` / ``.lora_up.weight`` (main branch) or
``<module>_lora.down.weight`` / ``_lora.up.weight`` (research branch, which also adapts the UNet
transformers' ``proj_in``/``proj_out`` 1x1 convolutions and feed-forward layers, and the text
encoder's MLP). The pickle is read with ``torch.load(weights_only=True)``: a file whose pickle holds
code is refused, never executed. When loading fails, the file is classified without unpickling it
(the zip container with ``zipfile``, pickle opcodes with ``pickletools``) so the message says what
the file is. The official alpha is not stored (it is 1.0 at training); it is imported as 1.0.
"""
from __future__ import annotations

import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import BinaryIO

import torch

from ..concept import Concept
from ..errors import ConceptFileError, first_of
from ..lora import SUPPORTED_SHAPES, LoRAPair
from . import file_kinds

SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
_LORA_ENDS = (
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    ("_lora.down.weight", "down"),
    ("_lora.up.weight", "up"),
)
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of torch.save's pre-1.6 format
_LEGACY_PICKLES_AFTER_MAGIC = 4  # protocol version, system info, the data, the storage keys
# globals a plain tensor checkpoint names: tensor/storage rebuilders, dtypes, OrderedDict
_TENSOR_GLOBAL = re.compile(r"^(collections\.OrderedDict|torch\.\w+|torch\._utils\._rebuild_\w+|"
                            r"torch\._tensor\._rebuild_\w+|torch\.nn\.parameter\.Parameter)$")
_CUT_SHORT = ("exhausted", "not enough data", "remain", "no newline")  # pickletools' words for a stream that ends
_AGAIN = "Copy or download the file again."
_CHOOSE = "Choose the concept file (.pth or .safetensors) that ED-LoRA training or export wrote."


def read(path: Path) -> Concept | None:
    """Read an official checkpoint; None when the file is not a pickle checkpoint."""
    if path.suffix.lower() not in SUFFIXES:
        return None
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for unreadable files: classify the file ourselves
        message = _unloadable(path, err)
        # a refusal drops torch's own text (it suggests weights_only=False, i.e. running the file's code)
        raise ConceptFileError(message) from (None if message.startswith("Refused") else err)
    params = data.get("params") if isinstance(data, dict) else None
    if not isinstance(params, dict) or "new_concept_embedding" not in params:
        raise ConceptFileError(
            f"{path.name} is a checkpoint but not a Mix-of-Show ED-LoRA one: expected "
            f"params/new_concept_embedding, found top-level keys "
            f"{sorted(data)[:8] if isinstance(data, dict) else type(data).__name__}."
        )
    unknown_parts = sorted(set(params) - {"new_concept_embedding", "text_encoder", "unet"})
    if unknown_parts:
        raise ConceptFileError(f"{path.name}: unknown sections under params: {unknown_parts}.")
    embeddings = {str(w): t.float() for w, t in params["new_concept_embedding"].items()}
    return Concept(
        words=list(embeddings),
        embeddings=embeddings,
        text_lora=_pairs(path, params.get("text_encoder", {}), "text_encoder"),
        unet_lora=_pairs(path, params.get("unet", {}), "unet"),
        alpha=1.0,
        name=path.stem,
    )


def _pairs(path: Path, tensors: dict[str, torch.Tensor], part: str) -> dict[str, LoRAPair]:
    found: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    unknown = []
    for key, value in tensors.items():
        for end, slot in _LORA_ENDS:
            if key.endswith(end) and isinstance(value, torch.Tensor):
                found.setdefault(key[: -len(end)], {})[slot] = (key, value.float())
                break
        else:
            unknown.append(f"{key} {list(getattr(value, 'shape', [type(value).__name__]))}")
    if unknown:
        shown = first_of(sorted(unknown), 6)
        raise ConceptFileError(
            f"{path.name}: params/{part} holds entries that are not LoRA factors: {shown}. Supported: "
            "'<module>.lora_down.weight'/'.lora_up.weight' (main branch) or '<module>_lora.down.weight'/"
            f"'_lora.up.weight' (research branch), shaped {SUPPORTED_SHAPES}."
        )
    half = sorted(m for m, f in found.items() if set(f) != {"down", "up"})
    if half:
        raise ConceptFileError(
            f"{path.name}: LoRA modules missing their down or up half under params/{part}: {half[:12]}.")
    return {m: LoRAPair.from_factors(f["down"][1], f["up"][1], f"params/{part}/{f['down'][0]}",
                                     f"params/{part}/{f['up'][0]}") for m, f in found.items()}


# ---------------------------------------------------------------- why a file cannot be loaded
def _unloadable(path: Path, err: Exception) -> str:
    """One sentence on what the file is and one on what to do; never unpickles anything."""
    start = file_kinds.head(path)
    if start.startswith(b"PK\x03\x04"):  # torch.save's zip format
        return _zip_problem(path, err)
    if len(start) >= 2 and start[0] == pickle.PROTO[0] and 2 <= start[1] <= pickle.HIGHEST_PROTOCOL:
        with open(path, "rb") as f:
            return _pickle_problem(path, f, err, zip_format=False)
    return (f"{path.name} is not a checkpoint: it holds {file_kinds.describe(start)}, not PyTorch's zip "
            f"format or a pickle. {_CHOOSE}")


def _zip_problem(path: Path, err: Exception) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if not names:
                return (f"{path.name} is not a checkpoint: it is a zip archive without the data.pkl a PyTorch "
                        f"checkpoint has. {_CHOOSE}")
            with archive.open(names[0]) as f:
                return _pickle_problem(path, f, err, zip_format=True)
    except (zipfile.BadZipFile, EOFError, OSError):
        return (f"{path.name} is truncated or damaged: its zip container ends without its index "
                f"({path.stat().st_size} bytes). {_AGAIN}")


def _pickle_problem(path: Path, stream: BinaryIO, err: Exception, zip_format: bool) -> str:
    """Classify a pickle-based checkpoint from its opcodes (pickletools reads them; nothing is run)."""
    try:
        names, first = _scan(stream)
        legacy = not zip_format and first == _TORCH_LEGACY_MAGIC
        for _ in range(_LEGACY_PICKLES_AFTER_MAGIC if legacy else 0):
            names += _scan(stream)[0]
    except ValueError as scan_error:
        if any(word in str(scan_error) for word in _CUT_SHORT):
            return f"{path.name} is truncated: its pickle ends early ({path.stat().st_size} bytes). {_AGAIN}"
        return f"{path.name} is damaged: its pickle holds bytes that are no pickle instruction. {_AGAIN}"
    foreign = [n for n in names if not _TENSOR_GLOBAL.match(n)]
    if isinstance(err, pickle.UnpicklingError) and foreign:  # weights_only refused what the pickle imports
        return (f"Refused to load {path.name}: its pickle asks to run code ({foreign[0]}); Mix-of-Show never "
                "executes code from a file. Re-save the concept's tensors as safetensors with the original code "
                "or a tool you trust.")
    if not zip_format and not legacy:
        return (f"{path.name} is not a checkpoint: it is a Python pickle that torch.save did not write. "
                f"{_CHOOSE}")
    if "EOF" in str(err) or isinstance(err, EOFError):
        return f"{path.name} is truncated: its tensor data ends early ({path.stat().st_size} bytes). {_AGAIN}"
    return f"{path.name} is damaged: its tensor data cannot be read. {_AGAIN}"


def _scan(stream: BinaryIO) -> tuple[list[str], object]:
    """Globals one pickle names ("module.name") and its first argument, read up to its STOP opcode.

    Raises pickletools' ValueError when the stream ends early or holds an unknown opcode.
    """
    names: list[str] = []
    strings: list[str] = []
    first = None
    for opcode, arg, _ in pickletools.genops(stream):
        if first is None and opcode.name != "PROTO" and arg is not None:
            first = arg
        if opcode.name in ("GLOBAL", "INST"):
            names.append(str(arg).replace(" ", "."))
        elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
            names.append(f"{strings[-2]}.{strings[-1]}")
        elif isinstance(arg, str):
            strings.append(arg)
    return names, first

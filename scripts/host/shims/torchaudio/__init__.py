"""Import-only stand-in for torchaudio (PyPI has no build for torch 2.13).

Newer ComfyUI (0.2x) imports torchaudio when it loads ``comfy.sd``, for its audio models, which this pack never
runs. Every attribute of ``functional`` and ``transforms`` raises when called, so a real use fails loudly.
The folder is appended to sys.path, so an installed torchaudio always wins.
"""
__version__ = "0.0.0+mixofshow-shim"
from . import functional, transforms  # noqa: E402,F401

"""Import-only stand-in for torchvision (PyPI has no CPU build for torch 2.13).

ComfyUI imports torchvision at start-up but only uses it in Stable Cascade and LaMa code paths,
which this pack never runs. Every callable here raises, so a real use fails loudly.
"""
__version__ = "0.0.0+mixofshow-shim"
from . import models, transforms  # noqa: E402,F401

"""Import-only stand-in for torchvision (PyPI has no CPU build for torch 2.13).

ComfyUI imports torchvision at start-up but only uses it in code paths this pack never runs (Stable Cascade,
LaMa, detection, optical flow). Every name here is a callable that raises, so a real use fails loudly.
"""
__version__ = "0.0.0+mixofshow-shim"
from . import models, ops, transforms  # noqa: E402,F401

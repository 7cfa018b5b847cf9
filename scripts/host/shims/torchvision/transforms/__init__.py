from . import functional  # noqa: F401
from .functional import InterpolationMode  # noqa: F401


def _missing(*args, **kwargs):
    raise NotImplementedError("torchvision is not installed; this is the Mix-of-Show test host's import shim")


Compose = Normalize = Resize = ToTensor = _missing

"""torchvision.transforms: every name is a callable that raises (see the package docstring)."""
from _mos_shim import raising

from . import functional  # noqa: F401
from .functional import InterpolationMode  # noqa: F401

__getattr__ = raising("torchvision")

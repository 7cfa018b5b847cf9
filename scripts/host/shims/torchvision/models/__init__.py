"""torchvision.models: every name is a callable that raises (see the package docstring)."""
from _mos_shim import raising

from . import optical_flow  # noqa: F401

__getattr__ = raising("torchvision")

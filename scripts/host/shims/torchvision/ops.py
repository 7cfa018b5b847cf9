"""torchvision.ops: every name is a callable that raises (see the package docstring)."""
from _mos_shim import raising

__getattr__ = raising("torchvision")

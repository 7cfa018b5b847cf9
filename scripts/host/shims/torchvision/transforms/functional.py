"""torchvision.transforms.functional: InterpolationMode (read at import), every other name raises on use."""
import enum

from _mos_shim import raising


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


__getattr__ = raising("torchvision")

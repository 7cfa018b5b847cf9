def _missing(*args, **kwargs):
    raise NotImplementedError("torchvision is not installed; this is the Mix-of-Show test host's import shim")


efficientnet_v2_s = _missing

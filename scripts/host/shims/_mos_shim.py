"""What every name of the import-only shims (torchvision, torchaudio) resolves to: a callable that raises."""


def raising(package: str):
    """A module ``__getattr__`` whose names are callables raising NotImplementedError on use."""

    def missing(*args, **kwargs):
        raise NotImplementedError(f"{package} is not installed; this is the Mix-of-Show test host's import shim")

    def module_getattr(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return missing

    return module_getattr

"""Test-host adapter: let ComfyUI 2024-03's transformer blocks back-propagate.

Not part of the pack. ComfyUI before 0.3.41 adds residuals in place (``x += n``) inside
``BasicTransformerBlock._forward``, which autograd refuses; upstream changed them to ``x = n + x`` in
v0.3.41 (2025-06-16). The pack's training node therefore requires 0.3.41 and says so on older hosts.
Our pinned CI host is the 2024-03 release (the only ComfyUI on PyPI), so the tests and the demo
rebuild that one method from its own source with the in-place additions written out-of-place, the
same change upstream made. On hosts that already support backward this does nothing.
"""
from __future__ import annotations

import contextlib
import inspect
import re
import textwrap

_INPLACE = re.compile(r"^(\s*)x \+= (\w+)\s*$", re.MULTILINE)
_saved: dict[str, object] = {}


def needs_adapting() -> bool:
    """True when the host as shipped adds residuals in place (whether or not it is adapted right now)."""
    from comfy.ldm.modules import attention

    original = _saved.get("_forward", getattr(attention.BasicTransformerBlock, "_forward", None))
    return original is not None and bool(_INPLACE.search(inspect.getsource(original)))


def apply() -> bool:
    """Patch BasicTransformerBlock._forward if needed; True when patched."""
    from comfy.ldm.modules import attention

    cls = attention.BasicTransformerBlock
    if "_forward" in _saved or not needs_adapting():
        return "_forward" in _saved
    source = textwrap.dedent(inspect.getsource(cls._forward))
    source = _INPLACE.sub(lambda m: f"{m.group(1)}x = x + {m.group(2)}", source)
    namespace: dict[str, object] = {}
    exec(compile(source, "<mixofshow backward adapter>", "exec"), vars(attention), namespace)  # noqa: S102
    _saved["_forward"] = cls._forward
    cls._forward = namespace["_forward"]
    return True


def restore() -> None:
    from comfy.ldm.modules import attention

    if "_forward" in _saved:
        attention.BasicTransformerBlock._forward = _saved.pop("_forward")


@contextlib.contextmanager
def unadapted():
    """Temporarily the host as shipped (for testing the node's error on old hosts)."""
    was = "_forward" in _saved
    restore()
    try:
        yield
    finally:
        if was:
            apply()

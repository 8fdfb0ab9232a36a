"""Work-arounds for broken third-party installs, for every layer that loads transformers/diffusers models."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)


def hide_broken_torchvision() -> bool:
    """Make a torchvision that fails to import look absent, so transformers can still load; True if hidden.

    A CUDA torchvision wheel next to a CPU torch fails at import ("operator torchvision::nms does not
    exist"), and transformers imports torchvision eagerly whenever it is installed. NIL's encoders,
    text encoders and SAM2 (with its plain-torch processor fallback) run without it.
    """
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"] is None
    try:
        import torchvision  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means: unusable here
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        # None makes find_spec() report it absent
        sys.modules["torchvision"] = None  # type: ignore[assignment]
        log.warning("torchvision is installed but cannot be imported (%s); continuing without it", e)
        return True
    return False

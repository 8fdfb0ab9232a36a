"""Shared fixtures. Tests run offline: robots from MENAGERIE_ROOT (../shared/menagerie by default)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "menagerie"
if "MENAGERIE_ROOT" not in os.environ and _SHARED.is_dir():
    os.environ["MENAGERIE_ROOT"] = str(_SHARED)

from nil.gl import ensure_offscreen_gl  # noqa: E402

ensure_offscreen_gl()

MENAGERIE_PRESETS = ["unitree_h1", "unitree_g1", "pal_talos", "unitree_a1", "unitree_go2"]


@pytest.fixture(scope="session")
def menagerie_root() -> Path:
    """The offline menagerie copy; tests that need it skip when it is absent."""
    root = os.environ.get("MENAGERIE_ROOT")
    if not root or not Path(root).is_dir():
        pytest.skip("MENAGERIE_ROOT is not set to a menagerie copy")
    return Path(root)

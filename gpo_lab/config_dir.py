"""Where the Hydra configs are: inside the package when it is installed from a wheel (``pip install .``),
``conf/`` beside the package in a checkout (``pip install -e .``). The wheel ships ``conf/`` as the
package data ``gpo_lab/conf`` (setup.py), so ``python -m gpo_lab`` works from any directory either way."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
CONF_DIR = _PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf"

"""What tests import; fixtures stay in ``tests/conftest.py``.

- ``tests.helpers``: ``ROOT``, ``CONF_DIR``, ``SHARED_DATA``, the paths of the checkout
- ``tests.helpers.cli``: ``run_cli``, ``python -m gpo_lab ARGS`` in a subprocess
- ``tests.helpers.runs``: ``compose_config``, ``run_training``, the Hydra app in-process
- ``tests.helpers.models``: small models saved like hub checkpoints, and a stand-in hub that serves them
- ``tests.helpers.sweeps``: ``synthetic_sweep``, ``write_job``, sweep directories written by hand
- ``tests.helpers.distributed``: ``run_in``, ``summary``, ``records``, ``relative_differences``, runs of several ranks
- ``tests.helpers.faults``: faults a run's config injects as callbacks (``_target_=tests.helpers.faults.KillAtStep``)
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
SHARED_DATA = ROOT.parent / "shared" / "data"  # real preference data, read-only, beside the checkout

"""The aliases as ``loss=<alias>`` options (``loss=dpo``, ...), stored in Hydra's ConfigStore rather than yaml."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from gpo_lab.losses.catalog import ALIASES


def register_loss_configs() -> None:
    """Each alias becomes a ``loss=<alias>`` option that composes exactly as ``loss=<name>`` (its yaml).

    Called once by the command line (``gpo_lab.__main__``) before Hydra composes a config.
    """
    store = ConfigStore.instance()
    for alias, name in ALIASES.items():
        store.store(group="loss", name=alias, node={"defaults": [name]}, provider="gpo_lab")

"""Tasks: each builds the (LightningModule, LightningDataModule) of a run from its config.

A task is a function ``build(cfg, loss, beta)`` named by the config's ``builder`` key:
:func:`gpo_lab.tasks.language.build_language_task` (the default: a language model on text
pairs), :func:`gpo_lab.tasks.synthetic.build_synthetic_task` (the controlled study with a
golden reward) and :func:`gpo_lab.tasks.bandit.build_bandit_task` (the exact tabular bandit).
:func:`gpo_lab.tasks.common.build_task` builds the loss and calls the builder; every task takes its
optimizer and warm-up from :mod:`gpo_lab.training.optimizer` and says when ``reference_cache`` does not apply.
"""

"""gpo_lab's tests: a package, so that ``tests.helpers`` and ``tests.test_*`` import by one name in-process and
in the ``python -m gpo_lab`` subprocesses (Hydra ``_target_`` strings such as ``tests.helpers.faults.KillAtStep``)."""

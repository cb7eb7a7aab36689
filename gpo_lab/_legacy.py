"""Import paths of the flat layout before 0.2, kept working: each old module name is served by the
module(s) it moved to (``gpo_lab.packing`` is :mod:`gpo_lab.scoring.packing`, ...).

An old name that moved whole is the new module itself, so classes and functions are the same
objects under both names; one that was split is a module that looks each name up in its new
homes. ``python -m`` works with the old names too (``python -m gpo_lab.status``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

MOVED: dict[str, tuple[str, ...]] = {
    "gpo_lab.logprobs": ("gpo_lab.scoring.logprobs",),
    "gpo_lab.packing": ("gpo_lab.scoring.packing",),
    "gpo_lab.seq2seq": ("gpo_lab.scoring.seq2seq", "gpo_lab.models.tiny", "gpo_lab.models.hf"),
    "gpo_lab.gguf": ("gpo_lab.models.gguf",),
    "gpo_lab.lora": ("gpo_lab.models.lora", "gpo_lab.models.reference"),
    "gpo_lab.tokenizer": ("gpo_lab.models.tokenizers",),
    "gpo_lab.reference": ("gpo_lab.models.reference",),
    "gpo_lab.reference_cache": ("gpo_lab.models.reference_cache", "gpo_lab.models.reference"),
    "gpo_lab.sampling": ("gpo_lab.eval.sampling",),
    "gpo_lab.judges": ("gpo_lab.eval.judges",),
    "gpo_lab.callbacks": ("gpo_lab.eval",),
    "gpo_lab.callbacks.kl": ("gpo_lab.eval.kl",),
    "gpo_lab.callbacks.sample_bank": ("gpo_lab.eval.sample_bank",),
    "gpo_lab.callbacks.win_rate": ("gpo_lab.eval.win_rate",),
    "gpo_lab.train": ("gpo_lab.run.train", "gpo_lab.tasks.language"),
    "gpo_lab.summary": ("gpo_lab.run.summary",),
    "gpo_lab.records": ("gpo_lab.run.records",),
    "gpo_lab.metrics_file": ("gpo_lab.run.metrics_file",),
    "gpo_lab.safety": ("gpo_lab.run.lock", "gpo_lab.run.checkpoints", "gpo_lab.run.redaction", "gpo_lab.run.guards"),
    "gpo_lab.validation": ("gpo_lab.run.checks",),
    "gpo_lab.status": ("gpo_lab.run.status",),
    "gpo_lab.wandb_logging": ("gpo_lab.run.wandb_logging",),
    "gpo_lab.synthetic": ("gpo_lab.tasks.synthetic",),
    "gpo_lab.synthetic.behaviour": ("gpo_lab.tasks.synthetic.behaviour",),
    "gpo_lab.synthetic.builder": ("gpo_lab.tasks.synthetic.builder",),
    "gpo_lab.synthetic.cache": ("gpo_lab.run.cache",),
    "gpo_lab.synthetic.pairs": ("gpo_lab.tasks.synthetic.pairs",),
    "gpo_lab.synthetic.sft": ("gpo_lab.tasks.synthetic.sft",),
    "gpo_lab.synthetic.task": ("gpo_lab.tasks.synthetic.task",),
    "gpo_lab.bandit": ("gpo_lab.tasks.bandit",),
    "gpo_lab.bandit.figures": ("gpo_lab.report.bandit",),
    "gpo_lab.bandit.module": ("gpo_lab.tasks.bandit.module",),
    "gpo_lab.bandit.task": ("gpo_lab.tasks.bandit.problem",),
}


class _SplitModule(types.ModuleType):
    """An old module whose names now live in several modules: each is looked up where it went."""

    def __init__(self, name: str, homes: tuple[str, ...]):
        super().__init__(name, f"Moved to {', '.join(homes)}.")
        self._homes = homes

    def __getattr__(self, attribute: str):
        for home in self._homes:
            module = importlib.import_module(home)
            if hasattr(module, attribute):
                return getattr(module, attribute)
        raise AttributeError(
            f"module {self.__name__!r} (moved to {', '.join(self._homes)}) has no attribute {attribute!r}"
        )


class _MovedLoader(importlib.abc.Loader):
    def __init__(self, homes: tuple[str, ...]):
        self.homes = homes

    def create_module(self, spec):
        return None if len(self.homes) == 1 else _SplitModule(spec.name, self.homes)

    def exec_module(self, module) -> None:
        if len(self.homes) == 1:  # the old name becomes the new module itself
            sys.modules[module.__name__] = importlib.import_module(self.homes[0])

    def get_code(self, name: str):
        """For ``python -m OLD_NAME``: the code of the module it moved to."""
        home = importlib.util.find_spec(self.homes[0])
        return home.loader.get_code(self.homes[0])


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path=None, target=None):
        homes = MOVED.get(fullname)
        if homes is None:
            return None
        is_package = any(name.startswith(fullname + ".") for name in MOVED)
        return importlib.machinery.ModuleSpec(fullname, _MovedLoader(homes), is_package=is_package)


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())

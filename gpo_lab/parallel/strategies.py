"""Data-parallel strategies: gloo and a fixed number of torch threads for CPU ranks, and FSDP that
takes gpo_lab's batches.

Two ranks on one machine that each start torch's default thread pool (one thread per core)
oversubscribe the cores and run slower than one process; each CPU rank takes ``num_threads``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies import FSDPStrategy as LightningFSDPStrategy
from pytorch_lightning.strategies import fsdp as lightning_fsdp
from torch.distributed.fsdp import (
    FullOptimStateDictConfig,
    FullStateDictConfig,
    FullyShardedDataParallel,
    StateDictType,
)


class CPUDDPStrategy(DDPStrategy):
    """Lightning's DDP over gloo with ``num_threads`` torch threads in every rank."""

    def __init__(self, num_threads: int | None = 1, **kwargs):
        kwargs.setdefault("process_group_backend", "gloo")
        super().__init__(**kwargs)
        self.num_threads = num_threads

    def setup_environment(self) -> None:
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        super().setup_environment()


class FSDPStrategy(LightningFSDPStrategy):
    """Lightning's FSDP, with its input conversion applied field by field to a batch dataclass.

    FSDP's precision plugin converts every input through ``apply_to_collection``, which refuses
    frozen dataclasses such as :class:`~gpo_lab.scoring.batches.PairBatch`; this converts the
    fields and rebuilds the batch with ``dataclasses.replace``.
    """

    def setup(self, trainer) -> None:
        plugin = self.precision_plugin
        convert = plugin.convert_input

        def convert_fields(data: Any) -> Any:
            if dataclasses.is_dataclass(data) and not isinstance(data, type):
                fields = {f.name: getattr(data, f.name) for f in dataclasses.fields(data) if f.init}
                return dataclasses.replace(data, **{k: convert(v) for k, v in fields.items() if v is not None})
            return convert(data)

        plugin.convert_input = convert_fields  # type: ignore[method-assign]
        super().setup(trainer)

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The FSDP wrapper of ``model``, made once: a ``trainer.validate`` after ``fit`` reuses it.

        Lightning would wrap the module a second time, over parameters that the first wrapper
        has already flattened and sharded (``'weight' must be 2-D`` at the first forward).
        """
        previous = getattr(self, "_fsdp_root", None)
        if previous is not None and previous.module is model:
            return previous
        self._fsdp_root = self._wrap(model)
        return self._fsdp_root

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return super()._setup_model(model)


def _full_state_dict_context(module: torch.nn.Module, world_size: int, rank0_only: bool = True):
    """Lightning's full-state-dict context, without ``offload_to_cpu`` for a module that is on the CPU already.

    Offloading CPU parameters "to the CPU" makes torch's FSDP clone freed storage: a segfault at
    the first checkpoint. For modules on a GPU it is Lightning's context unchanged.
    """

    offload = any(p.device.type != "cpu" for p in module.parameters())
    return FullyShardedDataParallel.state_dict_type(
        module=module,
        state_dict_type=StateDictType.FULL_STATE_DICT,
        state_dict_config=FullStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only),
        optim_state_dict_config=FullOptimStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only),
    )


class CPUFSDPStrategy(FSDPStrategy):
    """FSDP over gloo with ``num_threads`` torch threads in every rank (FSDP on CPU, for tests)."""

    def __init__(self, num_threads: int | None = 1, **kwargs):
        kwargs.setdefault("process_group_backend", "gloo")
        super().__init__(**kwargs)
        self.num_threads = num_threads
        lightning_fsdp._get_full_state_dict_context = _full_state_dict_context  # see its docstring

    def setup_environment(self) -> None:
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        super().setup_environment()

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """Wraps with ``device_id=cpu``: Lightning passes none on CPU, and torch's FSDP then refuses a CPU device."""

        if not any(isinstance(module, FullyShardedDataParallel) for module in model.modules()):
            model = FullyShardedDataParallel(
                module=model,
                cpu_offload=self.cpu_offload,
                mixed_precision=self.mixed_precision_config,
                sharding_strategy=self.sharding_strategy,
                device_id=torch.device("cpu"),
                **self.kwargs,
            )
        return super()._wrap(model)

"""Data-parallel strategies for CPU ranks: gloo, and a fixed number of torch threads per rank.

Two ranks on one machine that each start torch's default thread pool (one thread per core)
oversubscribe the cores and run slower than one process; each rank takes ``num_threads``.
"""

from __future__ import annotations

import torch
from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy


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


class CPUFSDPStrategy(FSDPStrategy):
    """Lightning's FSDP over gloo with ``num_threads`` torch threads in every rank (FSDP on CPU, for tests)."""

    def __init__(self, num_threads: int | None = 1, **kwargs):
        kwargs.setdefault("process_group_backend", "gloo")
        super().__init__(**kwargs)
        self.num_threads = num_threads

    def setup_environment(self) -> None:
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        super().setup_environment()

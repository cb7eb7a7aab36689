"""The ranks of one run (who owns its files, how values are gathered, how a failure reaches every
rank) and the data-parallel strategies (DDP and FSDP on CPU and GPU)."""

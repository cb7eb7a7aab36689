"""A run's files on disk: what they are called, how they are written atomically and locked, the
caches of expensive results, and the readers of ``metrics.jsonl``, ``summary.json`` and
``per_prompt.jsonl``.

The lowest layer with the errors: it imports neither torch nor Lightning, so the status and report
commands read a sweep without them.
"""

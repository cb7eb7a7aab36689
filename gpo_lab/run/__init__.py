"""The life of one run, top to bottom: check the config, claim the run directory, build the task,
fit, record the outcome (``summary.json``), and turn failed jobs into the command's exit code.

Only orchestration lives here; the files it writes are named and written by :mod:`gpo_lab.store`.
"""

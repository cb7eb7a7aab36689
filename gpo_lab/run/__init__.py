"""The life of a run and the files it leaves: training, summary, metrics file, locks, atomic writes,
redaction, start-up checks, checkpoints, caches, loggers and the sweep status.

Kept free of heavy imports: the report and status commands read a run's files without Lightning.
"""

"""What happened: one run record per job (written first), MLflow runs and artifacts, offline sync.

May import: the shared top and harness.data.
"""

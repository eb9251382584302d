"""What to run: suites, the planner (jobs with stable keys) and the --dry-run cost model.

May import: the shared top, harness.data and harness.track.
"""

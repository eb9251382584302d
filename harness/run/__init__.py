"""Running it: the local and Ray executors, data-parallel feature extraction, the profiler.

May import: the shared top, harness.data, harness.track and harness.plan.
"""

"""What it means: leaderboards (md, csv, html), statistics, the regression gate, profile tables.

May import: the shared top, harness.data, harness.track, harness.plan and harness.run.
"""

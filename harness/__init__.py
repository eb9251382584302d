"""harness: a benchmark harness for vision backbones under identical protocols.

Importing this package stays cheap (no torch): heavy modules load on first use.
"""

__version__ = "0.1.0"

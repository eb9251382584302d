"""Task families (fsc, sbir, ovss): each owns its datasets, protocol, head and metrics."""

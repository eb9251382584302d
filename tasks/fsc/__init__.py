"""Few-shot classification on the CoOp 11-dataset suite, read from the real CoOp on-disk formats."""

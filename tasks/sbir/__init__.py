"""Zero-shot sketch-based image retrieval on Sketchy, TU-Berlin and QuickDraw, read from the SAKE-style file lists."""

"""Inputs and stores: real on-disk formats, images and archives, the input pipeline, weights, the feature store.

May import: the shared top (harness/*.py) only.
"""

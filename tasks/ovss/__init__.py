"""Open-vocabulary semantic segmentation: readers, mini generator, dense text head, inference and mIoU."""

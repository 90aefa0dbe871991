"""Dropout Lab: train the seed tutorial's dropout CNN on MNIST and see what dropout does."""

__version__ = "0.1.0"

"""vram-ml: predict the peak GPU memory of a fine-tuning run before you start it."""

__version__ = "0.1.0"

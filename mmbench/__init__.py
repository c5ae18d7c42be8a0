"""mmbench: a benchmark suite for multimodal classification with missing modalities."""

__version__ = "0.2.0"

"""meritsl-lightning: MERITS-L (LLM-supervised pre-training for multimodal emotion recognition in
conversations) as a PyTorch Lightning experiment framework."""

__version__ = "0.1.0"

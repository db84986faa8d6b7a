"""Frozen text and speech encoders and the embedding cache."""

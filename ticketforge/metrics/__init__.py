"""Measurements: theoretical FLOPs (MACs), Frechet distance, KID."""

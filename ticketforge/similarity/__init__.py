"""Similarity of two networks: CKA on weights or activations, mask overlap."""

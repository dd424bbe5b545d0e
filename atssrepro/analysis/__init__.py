"""Analyses that need no trained model: how the assigners treat the ground truth of a dataset."""

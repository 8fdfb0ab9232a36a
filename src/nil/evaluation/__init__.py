"""Evaluation layer: rollouts, metrics, side-by-side video, HTML report, and the end-to-end pipeline."""

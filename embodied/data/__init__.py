"""Demonstration datasets: collection, storage and episode-aware sampling (not available yet)."""

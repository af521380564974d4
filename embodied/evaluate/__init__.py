"""Rollout evaluation: `rollout` runs a policy for N episodes; `summarize` aggregates."""

from embodied.evaluate.rollout import EpisodeRecord, info_row, rollout
from embodied.evaluate.summary import format_table, summarize

__all__ = ["EpisodeRecord", "format_table", "info_row", "rollout", "summarize"]

"""Rollout evaluation: `rollout` runs a policy over episodes; `summarize` aggregates;
`embodied.evaluate.run.evaluate` is the `embodied-eval` command (resume, suites, videos, Ray)."""

from embodied.evaluate.rollout import (
    EpisodeRecord,
    EpisodeSpec,
    RolloutObserver,
    episode_plan,
    grouped,
    info_row,
    rollout,
)
from embodied.evaluate.summary import describe, format_table, summarize, summarize_groups, wilson

__all__ = [
    "EpisodeRecord",
    "EpisodeSpec",
    "RolloutObserver",
    "describe",
    "episode_plan",
    "format_table",
    "grouped",
    "info_row",
    "rollout",
    "summarize",
    "summarize_groups",
    "wilson",
]

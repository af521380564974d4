"""Demonstration data: recorded episodes and episode-aligned training windows."""

from embodied.data.episodes import Episode, collect_episodes, episode_windows, normalization_stats

__all__ = ["Episode", "collect_episodes", "episode_windows", "normalization_stats"]

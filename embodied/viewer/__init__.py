"""Interactive simulator viewer (not available yet)."""

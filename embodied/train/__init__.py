"""Policy training: behaviour cloning, single process or torchrun (not available yet)."""

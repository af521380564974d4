"""`python -m embodied.viewer env=... policy=...`: the same as `embodied-view`."""

from embodied.cli import view_main

if __name__ == "__main__":
    view_main()

"""`python -m embodied.train ...` (and `torchrun ... -m embodied.train ...`): the `embodied-train` command."""

from embodied.cli import train_main

if __name__ == "__main__":
    train_main()

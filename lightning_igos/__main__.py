"""``python -m lightning_igos``: the same as the ``lightning-igos`` command."""

from lightning_igos.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

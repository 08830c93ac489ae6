"""``python -m lightning_igos.demo``: the demo's training run (:func:`lightning_igos.demo.app.main`)."""

from lightning_igos.demo.app import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python -m lightning_igos.demo"))

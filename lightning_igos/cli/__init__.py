"""The ``lightning-igos`` command line (``lightning_igos.cli:main``).

* :mod:`~lightning_igos.cli.commands`: argument parsing, the entry point and exit statuses;
* :mod:`~lightning_igos.cli.check`: :func:`run_check`, the check from typed :class:`CheckSettings`;
* :mod:`~lightning_igos.cli.report`: the JSON report (and ``PROG``, the program name);
* :mod:`~lightning_igos.cli.table`: the table that ``check`` prints;
* :mod:`~lightning_igos.cli.images`: the PNG panels of ``--images``;
* :mod:`~lightning_igos.cli.progress`: the progress line on a terminal;
* :mod:`~lightning_igos.cli.html_report`: the HTML report and the Markdown step summary;
* :mod:`~lightning_igos.cli.outputs`: output paths checked against the inputs, files written atomically;
* :mod:`~lightning_igos.cli.model_loading`: importing ``--model`` and reading ``--checkpoint`` safely;
* :mod:`~lightning_igos.cli.errors`: :class:`InputError`, a problem the user can fix (exit 2).
"""

from lightning_igos.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]

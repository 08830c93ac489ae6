"""The ``lightning-igos`` command line (``lightning_igos.cli:main``).

* :mod:`~lightning_igos.cli.commands`: argument parsing, the entry point and exit statuses;
* :mod:`~lightning_igos.cli.check`: :func:`run_check`, the check from typed :class:`CheckSettings`;
* :mod:`~lightning_igos.cli.settings`: :class:`CheckSettings` and its gates;
* :mod:`~lightning_igos.cli.options`: the solver and metric options, generated from ``IGOSConfig``'s fields;
* :mod:`~lightning_igos.cli.early`: mistakes caught before torch is imported;
* :mod:`~lightning_igos.cli.source`: defaults read from the source text (``--help`` imports no torch);
* :mod:`~lightning_igos.cli.compare`: the baseline gate (``compare``, ``check --baseline-report``);
* :mod:`~lightning_igos.cli.report`: the JSON report;
* :mod:`~lightning_igos.cli.report_model`: :class:`ReportView`, what every output of the report shows, decided once;
* :mod:`~lightning_igos.cli.table`: the table that ``check`` prints (a layout of the view);
* :mod:`~lightning_igos.cli.images`: the PNG panels of ``--images``;
* :mod:`~lightning_igos.cli.progress`: the progress line on a terminal;
* :mod:`~lightning_igos.cli.html_report`: the HTML report and the Markdown summary (layouts of the view);
* :mod:`~lightning_igos.cli.outputs`: output paths checked against the inputs, files written atomically;
* :mod:`~lightning_igos.cli.model_loading`: importing ``--model`` and reading ``--checkpoint`` safely;
* :mod:`~lightning_igos.cli.errors`: :class:`InputError`, a problem the user can fix (exit 2), and ``PROG``.
"""

from lightning_igos.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]

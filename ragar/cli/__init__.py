"""The ``ragar`` command line: the composition root, the one place that wires every package together.

Nothing outside this package imports it (``tests/test_architecture.py``). It holds wiring and
printing only: the evaluations and the HTML pages they produce live in :mod:`eval`, the models in
:mod:`ragar` and :mod:`recsys`, the service in :mod:`serving`. One module per command group:
``world`` (world, data), ``train``, ``generate`` (embed, generate, generate-batch), ``evaluate``
(eval ...), ``serve`` (serve, ab, keys, eval alignment) and ``demo``.

Every command prints its result as a table and writes it as JSON; visual results also go into an
HTML report. Errors a user can cause (bad config, bad data, unknown ids, a device the machine
lacks) exit with code 2 and a message that names the problem; nothing is half-written.
"""

from __future__ import annotations

import os
import sys

if not sys.stderr.isatty():
    # a piped log gets each progress bar as one line (drawn when its stage starts, redrawn when it
    # ends), not a redraw every 0.1 s. tqdm reads TQDM_* defaults when it is first imported, so this
    # runs before anything below imports it.
    os.environ.setdefault("TQDM_MININTERVAL", "1e9")

from ragar.cli import demo, evaluate, generate, serve, train, world  # noqa: F401 (each registers its commands)
from ragar.cli.apps import app

__all__ = ["app", "expand_list_options", "main"]


def expand_list_options(argv: list[str], options: tuple[str, ...] = ("--images", "-i", "--extra-data")
                        ) -> list[str]:
    """``--images A B C`` -> ``--images A --images B --images C``: click options take one value
    each, and a list of files after one flag is what people type (and what the issue asks for)."""
    out, i = [], 0
    while i < len(argv):
        out.append(argv[i])
        if argv[i] in options:
            j = i + 1
            while j < len(argv) and not argv[j].startswith("-"):
                out += ([argv[i]] if j > i + 1 else []) + [argv[j]]
                j += 1
            i = j
        else:
            i += 1
    return out


def main() -> None:
    from ragar.provenance import record_start

    record_start()  # the code that runs is the code at the start (a results JSON is written at the end)
    app(args=expand_list_options(sys.argv[1:]))


"""``python -m ragar.cli``: the same as the ``ragar`` command."""

from ragar.cli import main

main()

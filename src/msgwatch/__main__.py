"""``python -m msgwatch``: the same as the ``msgwatch`` command."""

from msgwatch.cli.main import main

main()

"""``python -m atrepo``: the same entry point as the ``atrepo`` command."""

from atrepo.cli.app import main

main()

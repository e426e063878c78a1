"""``python -m atrepo``: the same entry point as the ``atrepo`` command.

Guarded, because worker processes (the relay's ``--workers``) import the main
module again under another name, and must not run the command a second time.
"""

from atrepo.cli.app import main

if __name__ == "__main__":
    main()

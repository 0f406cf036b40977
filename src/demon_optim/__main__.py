"""``python -m demon_optim``: the ``demon-optim`` command."""

from demon_optim.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

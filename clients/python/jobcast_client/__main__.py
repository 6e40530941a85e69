"""``python -m jobcast_client``: the ``jobcast`` command."""

from ._cli import main

if __name__ == "__main__":
    main()

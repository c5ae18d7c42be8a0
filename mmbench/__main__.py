"""``python -m mmbench`` = the ``mmbench`` command."""

from .cli import main

main()

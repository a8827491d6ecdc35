"""``python -m hedgetune.cli``: the same as the ``hedgetune`` command."""

from . import main

main()

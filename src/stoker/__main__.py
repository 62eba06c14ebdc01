"""``python -m stoker`` runs the command line (the same as ``stoker``)."""

from stoker.cli import main

main()

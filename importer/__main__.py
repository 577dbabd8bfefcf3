"""``python -m importer`` runs the CLI."""

from importer._entry import main

main()

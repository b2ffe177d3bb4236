"""``python -m ticketforge`` (what ``torchrun -m ticketforge`` runs)."""

from .cli.main import main

main()

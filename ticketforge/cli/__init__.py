"""The ``ticketforge`` command line (click + rich)."""

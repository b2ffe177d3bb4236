"""Small helpers shared by test modules (importable because conftest puts this folder on sys.path)."""

from __future__ import annotations

from ticketforge import hookimpl
from ticketforge.registry import Registry, build_registry
from ticketforge.testing import load_script  # noqa: F401  (the suites import it from here)


def core_registry(*plugins: object) -> Registry:
    """The core's built-ins, the toy model and dataset, and ``plugins``: no other installed plugin.

    What every core test runs on (the ``registry`` fixture, and ``get_registry()`` inside a test), so
    that a third-party plugin installed beside ticketforge, broken or registering a name the tests
    use, cannot change what the suite sees. The built-ins still come through their entry point, as
    ``ticketforge list`` finds them (distribution ``ticketforge``).
    """
    import toy_plugin

    return build_registry(entry_points=["ticketforge"], plugins=[toy_plugin, *plugins])


class StopAt:
    """A plugin that stops a run at a logged training step as Ctrl-C does (the checkpoint before it is kept)."""

    def __init__(self, round_index: int, step: int):
        self.at = (round_index, step)

    @hookimpl
    def ticketforge_train_step(self, run, round_index, step, metrics):
        if (round_index, step) == self.at:
            raise KeyboardInterrupt

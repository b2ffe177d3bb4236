"""Generic components shipped with the core; they register through the entry-point group too."""

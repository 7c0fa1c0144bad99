"""One module per transport family; each exposes ``bring_up`` (see :mod:`msgwatch.circumvention.registry`)."""

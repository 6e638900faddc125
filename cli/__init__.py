"""The ``nexanest`` command: it imports everything, and nothing imports it."""

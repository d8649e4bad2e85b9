"""The ``wxassist`` command's groups that sit above the service (they build it in-process)."""

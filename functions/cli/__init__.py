"""The ``wxassist`` command: one module per command group (service, kb, eval, model, trace,
scaling, bench), put together in ``main.py``. The top layer: it may import anything else."""

"""The WeChat platform stand-in: callbacks signed, encrypted and delivered on WeChat's schedule
(``platform.py``), the customer-service API with its tokens, quotas and error codes
(``platform_api.py``), and the emulator that plays both sides for ``wxassist chat``, the
benchmarks and the tests (``emulator.py``). The service never imports it."""

"""The ingress: the deployment that owns WeChat's callback (``deployment.py``), its HTTP routes
(``http.py``), WeChat's delivery windows, claims and hand-offs (``delivery.py``), the account's
answer mode (``answer_mode.py``) and handles to the functions (``handles.py``)."""

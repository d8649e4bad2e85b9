"""The ingress: the deployment that owns WeChat's callback, a thin HTTP edge (``deployment.py``,
``http.py``) over named stages that its builder assembles per replica (``assembly.py``):
WeChat's deliveries of a message turned into one answer (``delivery.py``, ``delivery_policy.py``,
``ledger_watch.py``), the message's job and its recovery (``jobs.py``), where an answer goes
when no passive reply carries it (``overflow.py``), the message's way through limits, "继续"
and the intent's route (``routing.py``, ``conversation.py``), knowledge answers and the account's
answer mode (``answering.py``, ``answer_mode.py``), and handles to the functions (``handles.py``)."""

"""What the service says about itself, never what users said: structured logs with trace ids
(``logs.py``), OpenTelemetry traces across replica processes (``tracing.py``), what the ingress
records per message (``message_telemetry.py``), Prometheus metrics merged across replicas
(``metrics.py``), span files read back for ``wxassist trace`` (``span_files.py``), and the
Grafana dashboard and alert rules."""

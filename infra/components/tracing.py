"""An OpenTelemetry collector in the cluster: the Ray pods send spans over OTLP to it, and it
batches them on to the configured backend (Jaeger, Tempo, a vendor), so a slow or absent
backend never slows a reply."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import yaml

from infra.components.node_groups import POOL_LABEL
from infra.config import Naming

OTLP_GRPC_PORT = 4317
OTLP_HTTP_PORT = 4318


def collector_config(backend_endpoint: str) -> dict:
    exporter = ({"otlphttp": {"endpoint": backend_endpoint}} if backend_endpoint
                else {"debug": {"verbosity": "basic"}})
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"0.0.0.0:{OTLP_GRPC_PORT}"},
                                             "http": {"endpoint": f"0.0.0.0:{OTLP_HTTP_PORT}"}}}},
        "processors": {"memory_limiter": {"check_interval": "1s", "limit_percentage": 80,
                                          "spike_limit_percentage": 20},
                       "batch": {"timeout": "2s", "send_batch_size": 1024}},
        "exporters": exporter,
        "extensions": {"health_check": {"endpoint": "0.0.0.0:13133"}},
        "service": {"extensions": ["health_check"], "pipelines": {"traces": {
            "receivers": ["otlp"], "processors": ["memory_limiter", "batch"], "exporters": list(exporter)}}},
    }


@dataclass(frozen=True)
class CollectorArgs:
    naming: Naming
    namespace: str
    image: str
    backend_endpoint: str
    replicas: int


class TracingCollector(pulumi.ComponentResource):
    endpoint: str  # OTEL_EXPORTER_OTLP_ENDPOINT for the Ray pods

    def __init__(self, name: str, args: CollectorArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("wxassist:infra:TracingCollector", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = {**args.naming.labels, "app.kubernetes.io/name": "otel-collector"}
        selector = {"app.kubernetes.io/name": "otel-collector"}
        config = k8s.core.v1.ConfigMap(
            name, metadata={"name": "otel-collector", "namespace": args.namespace, "labels": labels},
            data={"config.yaml": yaml.safe_dump(collector_config(args.backend_endpoint), sort_keys=False)}, opts=child)
        k8s.apps.v1.Deployment(name, opts=child, metadata={"name": "otel-collector", "namespace": args.namespace,
                                                           "labels": labels}, spec={
            "replicas": args.replicas,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": labels}, "spec": {
                "nodeSelector": {POOL_LABEL: "cpu"},
                "containers": [{
                    "name": "collector", "image": args.image, "args": ["--config=/conf/config.yaml"],
                    "ports": [{"containerPort": OTLP_GRPC_PORT}, {"containerPort": OTLP_HTTP_PORT}],
                    "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
                    "readinessProbe": {"httpGet": {"path": "/", "port": 13133}},
                    "volumeMounts": [{"name": "config", "mountPath": "/conf"}],
                }],
                "volumes": [{"name": "config", "configMap": {"name": config.metadata.name}}],
            }},
        })
        k8s.core.v1.Service(name, opts=child, metadata={"name": "otel-collector", "namespace": args.namespace,
                                                        "labels": labels}, spec={
            "selector": selector,
            "ports": [{"name": "otlp-grpc", "port": OTLP_GRPC_PORT}, {"name": "otlp-http", "port": OTLP_HTTP_PORT}],
        })
        # OTLP over HTTP: the service's exporter default (observability/tracing.py).
        self.endpoint = f"http://otel-collector.{args.namespace}.svc:{OTLP_HTTP_PORT}"
        self.register_outputs({"endpoint": self.endpoint})

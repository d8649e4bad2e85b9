"""The RayService KubeRay runs wxassist from: ``serveConfigV2`` is the validated
``deploy/*.yaml`` text itself, the Ray cluster's worker groups mirror the node groups (a GPU
group per market, so Ray's autoscaler fills the on-demand base before it asks for spot), and
WeChat reaches the Serve proxies through a network load balancer."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.components.node_groups import GPU_TOLERATION, MARKET_LABEL, POOL_LABEL, gpu_group_plans
from infra.config import WORKER_DRAIN_S, Naming, StackConfig
from infra.instances import NodeType
from infra.serve_config import ServeConfig

SERVE_PORT = 8000  # http_options.port in deploy/*.yaml
WXA_HOME = "/home/ray/wxassist"  # deploy/Dockerfile makes it; caches, traces, the KB file
ENV_SECRET = "wxassist-env"  # the Kubernetes Secret every Ray container reads its secrets from
CALLBACK_SERVICE = "wxassist-callbacks"  # the Service WeChat calls
# Ray's autoscaler hands an idle worker back after this; the cluster autoscaler then removes
# the node (SCALE_DOWN_UNNEEDED later), so a spot GPU stays paid for ~15 idle minutes at most.
WORKER_IDLE_TIMEOUT_S = 300
# A worker pod that is going (a spot interruption notice, a scale-down) first drains its Ray
# node: Serve moves its replicas elsewhere and lets in-flight answers finish
# (functions/generate/scaling/drain.py). Kubernetes waits this long before killing the pod:
# a spot notice's two minutes, and the drain's deadline leaves it time to exit.
WORKER_GRACE_S = 120
WORKER_PRE_STOP = ["wxassist", "drain-node", "--deadline-s", f"{WORKER_DRAIN_S:g}"]
# The head holds no replicas; its Serve proxy drains for a few seconds on SIGTERM.
HEAD_GRACE_S = 60
HEAD_PRE_STOP = ["sleep", "10"]
# KubeRay's autoscaler sidecar on the head; sized here so the head fits beside a CPU worker.
AUTOSCALER_RESOURCES = {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}


def pod_resources(node: NodeType | None, *, gpus: int = 0, shares_node_with_head: bool = False) -> dict:
    """Kubernetes requests for one Ray pod: a worker fills its node (one Ray pod per node,
    less what the kubelet and daemonsets keep); the head is small and sits beside a CPU
    worker. Ray's own CPU count is ``NodeType.ray_cpus`` either way (rayStartParams)."""
    if node is None:
        cpu, memory = 0.5, 3  # plus the autoscaler sidecar's AUTOSCALER_RESOURCES
    elif shares_node_with_head:
        # Beside the head (0.5 CPU) and its autoscaler sidecar, CoreDNS, the operators and the
        # collector: about 1.5 CPU of a 4-vCPU node's 3.9 allocatable goes to them.
        cpu, memory = node.vcpus - 2, node.memory_gib - 6
    else:
        cpu, memory = node.vcpus - 0.5, node.memory_gib - 3
    requests = {"cpu": f"{cpu:g}", "memory": f"{memory}Gi"}
    limits = {"memory": f"{memory}Gi"}
    if gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(gpus)
    return {"requests": requests, "limits": limits}


def ray_container(name: str, image: str, resources: dict, env: list[dict], pre_stop: list[str]) -> dict:
    return {"name": name, "image": image, "env": env, "envFrom": [{"secretRef": {"name": ENV_SECRET}}],
            "ports": [{"name": "serve", "containerPort": SERVE_PORT}], "resources": resources,
            "lifecycle": {"preStop": {"exec": {"command": pre_stop}}}}


def pod_template(*, labels: dict, service_account: pulumi.Input[str], container: dict,
                 node_selector: dict, gpu: bool, grace_s: int) -> dict:
    spec: dict = {"serviceAccountName": service_account, "nodeSelector": node_selector,
                  "terminationGracePeriodSeconds": grace_s, "containers": [container]}
    if gpu:
        spec["tolerations"] = [GPU_TOLERATION]
    return {"metadata": {"labels": labels}, "spec": spec}


def callback_service_spec(config: StackConfig, labels: dict) -> tuple[dict, dict]:
    """(annotations, spec) of the Service WeChat calls: the Serve proxies (KubeRay labels the
    pods that run one ``ray.io/serve: "true"``) behind an internet-facing NLB on port 80, or
    443 with a certificate; WeChat calls no other port. A Service of our own, because KubeRay
    keeps the container's port for the one it generates."""
    annotations = {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}
    port = 80
    if config.tls_certificate_arn:
        port = 443
        annotations.update({"service.beta.kubernetes.io/aws-load-balancer-ssl-cert": config.tls_certificate_arn,
                            "service.beta.kubernetes.io/aws-load-balancer-ssl-ports": "443",
                            "service.beta.kubernetes.io/aws-load-balancer-backend-protocol": "tcp"})
    selector = {"ray.io/serve": "true", "wxassist/stack": labels["wxassist/stack"]}
    return annotations, {"type": "LoadBalancer", "selector": selector,
                         "ports": [{"name": "wechat", "port": port, "targetPort": SERVE_PORT}]}


def ray_labels(pool: str, market: str) -> str:
    """Ray node labels (``ray start --labels``): deploy files place replicas with them
    (generate prefers spot; the CPU steps stay off GPU nodes)."""
    return f"{MARKET_LABEL}={market},{POOL_LABEL}={pool}"


def ray_service_spec(*, config: StackConfig, serve: ServeConfig, ray_version: str, labels: dict,
                     service_account: pulumi.Input[str], env: list[dict]) -> dict:
    def container(name: str, resources: dict, pre_stop: list[str] = WORKER_PRE_STOP) -> dict:
        return ray_container(name, config.image, resources, env, pre_stop)

    head = {
        # No replicas on the head: losing a worker must not take the GCS with it.
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "template": pod_template(labels=labels, service_account=service_account, container=container("ray-head", pod_resources(None), HEAD_PRE_STOP),
                                 node_selector={POOL_LABEL: "cpu"}, gpu=False, grace_s=HEAD_GRACE_S),
    }
    cpu_node = config.cpu_node
    workers = [{
        "groupName": "cpu", "replicas": config.cpu.min_nodes, "minReplicas": config.cpu.min_nodes,
        "maxReplicas": config.cpu.max_nodes,
        "rayStartParams": {"num-cpus": str(cpu_node.ray_cpus), "labels": ray_labels("cpu", "on-demand")},
        "template": pod_template(labels=labels, service_account=service_account,
                                 container=container("ray-worker", pod_resources(cpu_node, shares_node_with_head=True)),
                                 node_selector={POOL_LABEL: "cpu"}, gpu=False, grace_s=WORKER_GRACE_S),
    }]
    gpu_node = config.gpu_node
    for plan in gpu_group_plans(config):
        workers.append({
            "groupName": f"gpu-{plan.market}", "replicas": plan.min_size, "minReplicas": plan.min_size,
            "maxReplicas": plan.max_size,
            "rayStartParams": {"num-cpus": str(gpu_node.ray_cpus), "num-gpus": str(gpu_node.gpus),
                               "labels": ray_labels("gpu", plan.market)},
            "template": pod_template(labels=labels, service_account=service_account,
                                     container=container("ray-worker", pod_resources(gpu_node, gpus=gpu_node.gpus)),
                                     node_selector={POOL_LABEL: "gpu", MARKET_LABEL: plan.market}, gpu=True,
                                     grace_s=WORKER_GRACE_S),
        })
    return {
        "serveConfigV2": serve.text,
        "rayClusterConfig": {
            "rayVersion": ray_version,
            "enableInTreeAutoscaling": True,
            "autoscalerOptions": {"idleTimeoutSeconds": WORKER_IDLE_TIMEOUT_S, "resources": AUTOSCALER_RESOURCES},
            "headGroupSpec": head,
            "workerGroupSpecs": workers,
        },
    }


@dataclass(frozen=True)
class WxassistServiceArgs:
    naming: Naming
    config: StackConfig
    serve: ServeConfig
    ray_version: str
    service_account: pulumi.Input[str]
    env: dict[str, pulumi.Input[str]]  # plain settings
    secret_env: dict[str, pulumi.Input[str]]  # WeChat keys, the state URI: a Kubernetes Secret


class WxassistService(pulumi.ComponentResource):
    name: pulumi.Output[str]
    callback_service: str

    def __init__(self, name: str, args: WxassistServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("wxassist:infra:WxassistService", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        namespace, labels = args.config.namespace, args.naming.labels
        secret = k8s.core.v1.Secret(
            f"{name}-env", metadata={"name": ENV_SECRET, "namespace": namespace, "labels": labels},
            string_data={key: pulumi.Output.secret(value) for key, value in args.secret_env.items()}, opts=child)
        env = [{"name": key, "value": value} for key, value in sorted(args.env.items())]
        service = k8s.apiextensions.CustomResource(
            name, api_version="ray.io/v1", kind="RayService",
            metadata={"name": "wxassist", "namespace": namespace, "labels": labels},
            spec=ray_service_spec(config=args.config, serve=args.serve, ray_version=args.ray_version, labels=labels,
                                  service_account=args.service_account, env=env),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[secret]))
        annotations, spec = callback_service_spec(args.config, labels)
        callbacks = k8s.core.v1.Service(
            f"{name}-callbacks", metadata={"name": CALLBACK_SERVICE, "namespace": namespace, "labels": labels,
                                           "annotations": annotations},
            spec=spec, opts=child)
        self.name = service.metadata["name"]
        self.callback_service = CALLBACK_SERVICE
        self.callback_host = callbacks.status.load_balancer.ingress[0].hostname
        self.register_outputs({"name": self.name})

"""The RayService KubeRay runs wxassist from, written for KubeRay >= 1.5.1 (the stack installs
1.7.0, and infra/tests validate against its CRD and operator rules):

* ``serveConfigV2`` is the validated ``deploy/*.yaml`` text itself.
* The head container declares every port KubeRay looks up (dashboard, gcs-server, client,
  metrics, serve): KubeRay fills in its defaults only when a container declares none, and it
  finds the dashboard by port name before every Serve submission.
* Ray node labels live in each group's ``labels`` field, which Ray 2.60's autoscaler reads and
  KubeRay >= 1.5.1 requires (it refuses ``rayStartParams['labels']``); the deploy files'
  ``label_selector``s place replicas with them, which only autoscaler v2 honours.
* GCS fault tolerance on the stack's Redis: a lost head comes back with its cluster state,
  and the workers (and their Serve proxies) keep serving meanwhile.
* The deploy files run a Serve proxy on every node with replicas (``proxy_location:
  EveryNode``): KubeRay's worker readiness probe checks that proxy, and WeChat's ALB sends to
  those proxies, never to the head (``excludeHeadPodFromServeSvc``).
* Upgrades bring up a new cluster beside the old one (``NewCluster``); KubeRay's serve Service
  switches to it once its applications run (components/callback.py).
* Worker groups mirror Karpenter's pools: spot and on-demand GPU workers (on-demand stands in
  when spot is gone), CPU workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.components.karpenter import pool_plans
from infra.components.node_groups import (
    CAPACITY_TYPE_LABEL,
    GPU_TOLERATION,
    MARKET_LABEL,
    POOL_LABEL,
    SYSTEM_LABEL,
)
from infra.components.secrets import ENV_SECRET, REDIS_PASSWORD_KEY
from infra.config import WORKER_DRAIN_S, Naming, StackConfig
from infra.instances import NodeType
from infra.serve_config import ServeConfig

RAY_SERVICE = "wxassist"
SERVE_PORT = 8000  # http_options.port in deploy/*.yaml
# Every port KubeRay's head Service and the operator look up by name (KubeRay's defaults).
HEAD_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "metrics": 8080, "serve": SERVE_PORT}
WORKER_PORTS = {"serve": SERVE_PORT, "metrics": 8080}
WXA_HOME = "/home/ray/wxassist"  # deploy/Dockerfile makes it; caches, traces, the KB file
# Ray's autoscaler hands an idle worker back after this; Karpenter then removes the empty
# node (karpenter.EMPTY_NODE_S later), so a spot GPU stays paid for ~15 idle minutes at most.
WORKER_IDLE_TIMEOUT_S = 300
# A worker pod that is going (a spot interruption notice, a scale-down) first drains its Ray
# node: Serve moves its replicas elsewhere and lets in-flight answers finish
# (functions/generate/scaling/drain.py). Kubernetes waits this long before killing the pod:
# a spot notice's two minutes, and the drain's deadline leaves it time to exit.
WORKER_GRACE_S = 120
WORKER_PRE_STOP = ["wxassist", "drain-node", "--deadline-s", f"{WORKER_DRAIN_S:g}"]
# The head holds no replicas; it stops the Serve controller cleanly.
HEAD_GRACE_S = 60
HEAD_PRE_STOP = ["sleep", "10"]
# KubeRay's autoscaler sidecar on the head; sized here so the head fits on a system node.
AUTOSCALER_RESOURCES = {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
# Ray pods are started and stopped by Ray's autoscaler, never by Karpenter's consolidation.
DO_NOT_DISRUPT = {"karpenter.sh/do-not-disrupt": "true"}
# The model cache on the GPU node's NVMe (Karpenter's RAID0 of the instance store is mounted
# here on AL2023 and holds the kubelet's and containerd's data): a pod that lands on a node
# which served the model before restores nothing. Where the node has no instance store, the
# directory is made on the root volume and the cache still works, only slower.
MODEL_CACHE_HOST_DIR = "/mnt/k8s-disks/0/wxassist-models"
MODEL_CACHE_MOUNT = "/home/ray/model-cache"
RAY_UID, RAY_GID = 1000, 100  # the ray user of Ray's images


def head_resources(highly_available: bool) -> dict:
    """The head runs the GCS, the Serve controller and the dashboard: no replicas, but it must
    not starve (prod: twice dev)."""
    cpu, memory = (2, 8) if highly_available else (1, 4)
    return {"requests": {"cpu": str(cpu), "memory": f"{memory}Gi"}, "limits": {"memory": f"{memory}Gi"}}


def worker_resources(node: NodeType, *, gpus: int = 0, shares_node_with_head: bool = False) -> dict:
    """Kubernetes requests for one Ray worker pod: a worker fills its node (one Ray pod per
    node, less what the kubelet and daemonsets keep); the first CPU worker sits on a system node
    beside the head, the autoscaler sidecar and the controllers. Ray's own CPU count is
    ``NodeType.ray_cpus`` either way (rayStartParams)."""
    if shares_node_with_head:
        cpu, memory = node.vcpus - 2.5, node.memory_gib - 8
    else:
        cpu, memory = node.vcpus - 0.5, node.memory_gib - 3
    requests = {"cpu": f"{cpu:g}", "memory": f"{memory}Gi"}
    limits = {"memory": f"{memory}Gi"}
    if gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(gpus)
    return {"requests": requests, "limits": limits}


def ports(named: dict[str, int]) -> list[dict]:
    return [{"name": name, "containerPort": port} for name, port in named.items()]


def ray_container(name: str, image: pulumi.Input[str], resources: dict, env: list[dict], pre_stop: list[str],
                  named_ports: dict[str, int], mounts: list[dict] | None = None) -> dict:
    container = {"name": name, "image": image, "env": env, "envFrom": [{"secretRef": {"name": ENV_SECRET}}],
                 "ports": ports(named_ports), "resources": resources,
                 "lifecycle": {"preStop": {"exec": {"command": pre_stop}}}}
    if mounts:
        container["volumeMounts"] = mounts
    return container


def pod_template(*, labels: dict, service_account: pulumi.Input[str], container: dict, node_selector: dict,
                 gpu: bool, grace_s: int, volumes: list[dict] | None = None,
                 init_containers: list[dict] | None = None) -> dict:
    spec: dict = {"serviceAccountName": service_account, "nodeSelector": node_selector,
                  "terminationGracePeriodSeconds": grace_s, "containers": [container]}
    if gpu:
        spec["tolerations"] = [GPU_TOLERATION]
    if volumes:
        spec["volumes"] = volumes
    if init_containers:
        spec["initContainers"] = init_containers
    return {"metadata": {"labels": labels, "annotations": DO_NOT_DISRUPT}, "spec": spec}


def group_labels(pool: str, market: str) -> dict[str, str]:
    """Ray node labels of a worker group: the deploy files place replicas with them (generate
    prefers spot and falls back to on-demand; the CPU steps stay off GPU nodes)."""
    return {MARKET_LABEL: market, POOL_LABEL: pool}


@dataclass(frozen=True)
class Images:
    cpu: pulumi.Input[str]  # head and CPU workers
    gpu: pulumi.Input[str]  # GPU workers: CUDA and vLLM


def model_cache(image: pulumi.Input[str]) -> tuple[list[dict], list[dict], list[dict]]:
    """(volumes, mounts, init containers) of the NVMe model cache: the kubelet makes a missing
    hostPath directory as root, so an init container hands it to the ray user first."""
    volumes = [{"name": "model-cache", "hostPath": {"path": MODEL_CACHE_HOST_DIR, "type": "DirectoryOrCreate"}}]
    mounts = [{"name": "model-cache", "mountPath": MODEL_CACHE_MOUNT}]
    init = [{"name": "model-cache-owner", "image": image, "command": ["chown", f"{RAY_UID}:{RAY_GID}", MODEL_CACHE_MOUNT],
             "securityContext": {"runAsUser": 0}, "volumeMounts": mounts,
             "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}}]
    return volumes, mounts, init


def ray_service_spec(*, config: StackConfig, serve: ServeConfig, ray_version: str, labels: dict,
                     service_account: pulumi.Input[str], env: list[dict], images: Images,
                     redis_address: pulumi.Input[str]) -> dict:
    head = {
        # No replicas on the head: losing a worker must not take the GCS with it.
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "template": pod_template(
            labels=labels, service_account=service_account,
            container=ray_container("ray-head", images.cpu, head_resources(config.highly_available),
                                    # ElastiCache's certificate chains to Amazon's roots in the system store.
                                    [*env, {"name": "RAY_REDIS_CA_PATH", "value": "/etc/ssl/certs"}],
                                    HEAD_PRE_STOP, HEAD_PORTS),
            node_selector={SYSTEM_LABEL: "true"}, gpu=False, grace_s=HEAD_GRACE_S),
    }
    cpu_node = config.cpu_node
    workers = [{
        "groupName": "cpu", "replicas": config.cpu.min_nodes, "minReplicas": config.cpu.min_nodes,
        "maxReplicas": config.cpu.max_nodes,
        "rayStartParams": {"num-cpus": str(cpu_node.ray_cpus)},
        "labels": group_labels("cpu", "on-demand"),
        "template": pod_template(
            labels=labels, service_account=service_account,
            container=ray_container("ray-worker", images.cpu, worker_resources(cpu_node, shares_node_with_head=True),
                                    env, WORKER_PRE_STOP, WORKER_PORTS),
            node_selector={POOL_LABEL: "cpu"}, gpu=False, grace_s=WORKER_GRACE_S),
    }]
    gpu_node = config.gpu_fit_node
    gpu_env = [*env, {"name": "WXA_GENERATE_ENGINE", "value": "vllm"},
               {"name": "WXA_MODEL_CACHE", "value": MODEL_CACHE_MOUNT}]
    volumes, mounts, init = model_cache(images.gpu)
    for plan in pool_plans(config):
        if plan.pool != "gpu":
            continue
        minimum = config.gpu.on_demand_base if plan.market == "on-demand" else config.gpu_spot_min
        workers.append({
            "groupName": f"gpu-{plan.market}", "replicas": minimum, "minReplicas": minimum,
            "maxReplicas": plan.max_nodes,
            "rayStartParams": {"num-cpus": str(gpu_node.ray_cpus), "num-gpus": str(gpu_node.gpus)},
            "labels": group_labels("gpu", plan.market),
            "template": pod_template(
                labels=labels, service_account=service_account,
                container=ray_container("ray-worker", images.gpu, worker_resources(gpu_node, gpus=gpu_node.gpus),
                                        gpu_env, WORKER_PRE_STOP, WORKER_PORTS, mounts),
                node_selector={POOL_LABEL: "gpu", CAPACITY_TYPE_LABEL: plan.market}, gpu=True,
                grace_s=WORKER_GRACE_S, volumes=volumes, init_containers=init),
        })
    return {
        "serveConfigV2": serve.text,
        "upgradeStrategy": {"type": "NewCluster"},
        # The old cluster outlives the switch long enough for its in-flight answers (a worker's
        # drain) to finish.
        "rayClusterDeletionDelaySeconds": WORKER_GRACE_S,
        "excludeHeadPodFromServeSvc": True,
        "rayClusterConfig": {
            "rayVersion": ray_version,
            "enableInTreeAutoscaling": True,
            "autoscalerOptions": {"version": "v2", "idleTimeoutSeconds": WORKER_IDLE_TIMEOUT_S,
                                  "resources": AUTOSCALER_RESOURCES},
            # The storage namespace stays KubeRay's default (the RayCluster's UID): during an
            # upgrade the old and the new cluster must not share GCS state.
            "gcsFaultToleranceOptions": {
                "redisAddress": redis_address,
                "redisPassword": {"valueFrom": {"secretKeyRef": {"name": ENV_SECRET, "key": REDIS_PASSWORD_KEY}}}},
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
    env: dict[str, pulumi.Input[str]]  # plain settings; secrets come from the ENV_SECRET Secret
    images: Images
    redis_address: pulumi.Input[str]  # rediss://host:port, for GCS fault tolerance


class WxassistService(pulumi.ComponentResource):
    name: pulumi.Output[str]

    def __init__(self, name: str, args: WxassistServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("wxassist:infra:WxassistService", name, None, opts)
        env = [{"name": key, "value": value} for key, value in sorted(args.env.items())]
        service = k8s.apiextensions.CustomResource(
            name, api_version="ray.io/v1", kind="RayService",
            metadata={"name": RAY_SERVICE, "namespace": args.config.namespace, "labels": args.naming.labels},
            spec=ray_service_spec(config=args.config, serve=args.serve, ray_version=args.ray_version,
                                  labels=args.naming.labels, service_account=args.service_account, env=env,
                                  images=args.images, redis_address=args.redis_address),
            opts=pulumi.ResourceOptions(parent=self))
        self.name = service.metadata["name"]
        self.register_outputs({"name": self.name})

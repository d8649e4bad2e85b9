"""What KubeRay (v1.5.1 to v1.7.0) and Ray 2.60 do with a RayService that no schema says:
each rule is read from the operator's or Ray's code, and returns the problems it finds, worded
as the failure a real cluster would show. ``problems(spec)`` runs them all.

* Head ports: KubeRay builds the head Service from the head container's ports, adding its
  defaults only when the container declares none (``getServicePorts``), and looks up the
  ``dashboard`` port by name before each Serve submission (``FetchHeadServiceURL``: "dashboard
  port is not found").
* Labels: KubeRay >= 1.5.1 refuses ``rayStartParams['labels']`` (``validateRayGroupLabels``);
  Ray 2.60's autoscaler reads only a group's ``labels`` field
  (``_get_labels_from_group_spec``) and places ``label_selector`` replicas only as
  autoscaler v2.
* Worker readiness: a RayService worker's default readiness probe also asks the node's Serve
  proxy (``initLivenessAndReadinessProbe``) and every worker is labelled ``ray.io/serve=true``:
  without a proxy on every node with replicas (``proxy_location: EveryNode``), workers never
  become Ready or are sent traffic no proxy answers (kuberay#4994).
* GCS fault tolerance, the upgrade strategy and autoscaler v2's restart policy, as
  ``ValidateRayClusterSpec`` and the RayService controller read them.
"""

from __future__ import annotations

import yaml

from infra.components.node_groups import CAPACITY_TYPE_LABEL, MARKET_LABEL

REQUIRED_HEAD_PORTS = ("dashboard", "gcs-server", "client", "serve")


def head_port_problems(spec: dict) -> list[str]:
    container = spec["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    names = {port.get("name") for port in container.get("ports") or []}
    if not names:
        return []  # KubeRay fills in all of its defaults
    missing = [name for name in REQUIRED_HEAD_PORTS if name not in names]
    return [f"head container declares ports {sorted(n for n in names if n)} but not {', '.join(missing)}: "
            "KubeRay adds no defaults then, and Serve submissions fail with "
            f"'{missing[0]} port is not found'"] if missing else []


def groups(spec: dict) -> list[tuple[str, dict]]:
    cluster = spec["rayClusterConfig"]
    return [("head", cluster["headGroupSpec"])] + [(g["groupName"], g) for g in cluster.get("workerGroupSpecs", [])]


def label_problems(spec: dict) -> list[str]:
    found = []
    for name, group in groups(spec):
        params = group.get("rayStartParams") or {}
        if "labels" in params:
            found.append(f"group {name}: rayStartParams['labels'] is refused by KubeRay >= 1.5.1 and ignored by "
                         "Ray 2.60's autoscaler; use the group's labels field")
        if (params.keys() & {"num-cpus", "num-gpus", "memory", "resources"}) and group.get("resources"):
            found.append(f"group {name}: resources set in both rayStartParams and resources")
    return found


def serve_document(spec: dict) -> dict:
    return yaml.safe_load(spec["serveConfigV2"])


def selectors(spec: dict) -> list[tuple[str, dict, bool]]:
    """(deployment, label selector, needs a GPU) for every selector and fallback in the Serve config."""
    found = []
    for app in serve_document(spec).get("applications", []):
        for deployment in app.get("deployments", []):
            actor = deployment.get("ray_actor_options") or {}
            gpu = bool(actor.get("num_gpus"))
            if actor.get("label_selector"):
                found.append((deployment["name"], actor["label_selector"], gpu))
            for fallback in actor.get("fallback_strategy") or []:
                if fallback.get("label_selector"):
                    found.append((deployment["name"], fallback["label_selector"], gpu))
    return found


def placement_problems(spec: dict) -> list[str]:
    """Every label selector must match some worker group's labels (with a GPU where it needs
    one), and only autoscaler v2 places replicas by label."""
    cluster = spec["rayClusterConfig"]
    found = []
    wanted = selectors(spec)
    version = (cluster.get("autoscalerOptions") or {}).get("version", "v1")
    if wanted and (version != "v2" or not cluster.get("enableInTreeAutoscaling")):
        found.append(f"the Serve config places replicas by label_selector, but autoscaler {version} ignores "
                     "label selectors: set autoscalerOptions.version v2")
    workers = cluster.get("workerGroupSpecs", [])
    for deployment, selector, gpu in wanted:
        fits = [w["groupName"] for w in workers
                if all((w.get("labels") or {}).get(k) == v for k, v in selector.items())
                and (not gpu or int((w.get("rayStartParams") or {}).get("num-gpus", "0")) > 0)]
        if not fits:
            found.append(f"{deployment}: no worker group has the labels {selector}"
                         f"{' and a GPU' if gpu else ''}: its replicas would never be placed")
    return found


def readiness_problems(spec: dict) -> list[str]:
    location = serve_document(spec).get("proxy_location", "EveryNode")
    if location == "EveryNode":
        return []
    found = []
    for group in spec["rayClusterConfig"].get("workerGroupSpecs", []):
        container = group["template"]["spec"]["containers"][0]
        if container.get("readinessProbe") is None:
            found.append(f"group {group['groupName']}: proxy_location {location} runs no Serve proxy on workers, "
                         "but KubeRay's worker readiness probe asks for one: the pods never become Ready "
                         "(kuberay#4994)")
        else:
            found.append(f"group {group['groupName']}: a custom readiness probe with proxy_location {location} "
                         "puts workers with no Serve proxy into the serve Service")
    return found


def fault_tolerance_problems(spec: dict) -> list[str]:
    cluster = spec["rayClusterConfig"]
    found = []
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    cpu = str((head.get("resources") or {}).get("requests", {}).get("cpu", "0"))
    cpus = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    if cpus < 1:
        found.append(f"the head asks for {cpu} CPU: the GCS, Serve's controller and the dashboard need at least one")
    options = cluster.get("gcsFaultToleranceOptions")
    if not options:
        return [*found, "no gcsFaultToleranceOptions: losing the head pod loses the cluster's state and every "
                "Serve application with it"]
    if not options.get("redisAddress"):
        found.append("gcsFaultToleranceOptions without redisAddress")
    password = options.get("redisPassword") or {}
    if "value" in password:
        found.append("the GCS Redis password is written into the RayService; refer to the Secret instead")
    if options.get("externalStorageNamespace"):
        found.append("a fixed externalStorageNamespace makes the old and the new cluster of an upgrade share "
                     "GCS state; leave it to KubeRay (the RayCluster's UID)")
    return found


def upgrade_problems(spec: dict) -> list[str]:
    found = []
    kind = (spec.get("upgradeStrategy") or {}).get("type", "NewCluster")
    if kind not in ("NewCluster", "NewClusterWithIncrementalUpgrade"):
        found.append(f"upgradeStrategy {kind}: a changed cluster spec would not bring up a new cluster beside "
                     "the serving one")
    cluster = spec["rayClusterConfig"]
    if (cluster.get("autoscalerOptions") or {}).get("version") == "v2":
        for name, group in groups(spec):
            policy = group["template"]["spec"].get("restartPolicy")
            if policy not in (None, "Never"):
                found.append(f"group {name}: restartPolicy {policy} is refused with autoscaler v2")
    return found


def market_problems(spec: dict) -> list[str]:
    """A group's Ray market label must say where its pods actually land."""
    found = []
    for group in spec["rayClusterConfig"].get("workerGroupSpecs", []):
        market = (group.get("labels") or {}).get(MARKET_LABEL)
        selector = group["template"]["spec"].get("nodeSelector") or {}
        lands = selector.get(CAPACITY_TYPE_LABEL) or selector.get(MARKET_LABEL)
        if market and lands is None and group["template"]["spec"].get("tolerations"):
            found.append(f"group {group['groupName']}: labelled {market} but its pods may land on any market")
        elif market and lands and market != lands:
            found.append(f"group {group['groupName']}: labelled {market} but its pods land on {lands} nodes")
        elif market is None and ("gpu" in group["groupName"]):
            found.append(f"group {group['groupName']}: no {MARKET_LABEL} in its labels: the autoscaler cannot tell "
                         "spot from on-demand")
    return found


RULES = (head_port_problems, label_problems, placement_problems, readiness_problems, fault_tolerance_problems,
         upgrade_problems, market_problems)


def problems(spec: dict) -> list[str]:
    return [problem for rule in RULES for problem in rule(spec)]

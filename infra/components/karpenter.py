"""Karpenter: the node pools everything that scales runs on. Ray's autoscaler adds a worker
pod; Karpenter launches the cheapest instance that fits it from a list of types and zones, and
removes the node once it is empty.

* GPU spot: many instance types (``gpu.instance_types``) across every zone, so a spot pool
  running dry in one type or zone does not stop a burst; Karpenter's spot allocation is
  price-capacity-optimised. On-demand stands in when spot is gone: Ray's deploy files place
  generate on ``ray.io/market-type: spot`` with an on-demand fallback, and the on-demand pool
  takes those workers (and the prod base, which never scales away).
* Interruption handling: EventBridge sends spot interruption warnings, rebalance
  recommendations, scheduled maintenance and instance state changes to an SQS queue Karpenter
  reads. It cordons and drains the node at once, and the worker pod's preStop hook drains its
  Ray node (``wxassist drain-node``), so Serve moves replicas and in-flight answers finish
  within the two minutes' notice.
* Nodes with a local NVMe instance store get it as a RAID0 for the kubelet and containerd
  (``instanceStorePolicy: RAID0``); the model cache lives there (``ray_service.MODEL_CACHE_HOST_DIR``).
* Voluntary disruption (consolidation, drift) only takes empty nodes: Ray, not Karpenter,
  decides when a worker goes, and every Ray pod carries ``karpenter.sh/do-not-disrupt``.

The controller's IAM policy is condensed from Karpenter's published CloudFormation (v1.14),
scoped to this cluster's tags; see docs/deployment.md for what has not been run against AWS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.components.identity import OidcIssuer, service_account_role
from infra.components.node_groups import (
    CAPACITY_TYPE_LABEL,
    GPU_TAINT,
    SYSTEM_ON_CPU,
    node_labels,
)
from infra.config import Naming, StackConfig
from infra.instances import node_type

NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "karpenter"
# An empty GPU node waits this long before it goes: a node that comes back costs a boot and a
# model restore. Ray's autoscaler hands an idle worker back after its own idle timeout first.
EMPTY_NODE_S = 600
# Every node is replaced within 30 days (patched AMI); a node with Ray pods still gets this
# long to drain first.
NODE_EXPIRY = "720h"
NODE_DRAIN_LIMIT = "15m"
INTERRUPTION_EVENTS = {
    "spot-interruption": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    "state-change": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
    "scheduled-change": {"source": ["aws.health"], "detail-type": ["AWS Health Event"]},
}


@dataclass(frozen=True)
class PoolPlan:
    name: str  # the NodePool's name
    pool: str  # cpu | gpu (POOL_LABEL)
    market: str  # spot | on-demand (MARKET_LABEL and Karpenter's capacity type)
    instance_types: list[str]
    max_nodes: int  # what Ray's worker group may use at most
    gpus_per_node: int
    vcpus_per_node: int  # of the largest type: the pool's CPU limit is counted in these


def pool_plans(config: StackConfig) -> list[PoolPlan]:
    """The GPU pools (spot, on-demand) and the CPU pool for workers beyond the system group."""
    gpu_types = config.gpu.candidates
    largest_gpu = max(node_type(t, "gpu.instance_types").vcpus for t in gpu_types)
    gpus = config.gpu_node.gpus
    plans = [PoolPlan("gpu-spot", "gpu", "spot", gpu_types, config.gpu.spot_max, gpus, largest_gpu)] \
        if config.gpu.spot_max else []
    # On-demand takes the base plus every spot worker when spot is gone.
    plans.append(PoolPlan("gpu-on-demand", "gpu", "on-demand", gpu_types, config.gpu_node_max, gpus, largest_gpu))
    extra_cpu = config.cpu.max_nodes - config.cpu.min_nodes
    if extra_cpu:
        plans.append(PoolPlan("cpu", "cpu", "on-demand", [config.cpu.instance_type], extra_cpu, 0,
                              config.cpu_node.vcpus))
    return plans


def node_pool_spec(plan: PoolPlan, node_class: str) -> dict:
    # Limits leave room for a RayService upgrade, which runs the new cluster beside the old one
    # until the new one serves.
    limits = {"cpu": str(2 * plan.max_nodes * plan.vcpus_per_node)}
    if plan.gpus_per_node:
        limits["nvidia.com/gpu"] = str(2 * plan.max_nodes * plan.gpus_per_node)
    spec: dict = {
        "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": node_class},
        "requirements": [
            {"key": CAPACITY_TYPE_LABEL, "operator": "In", "values": [plan.market]},
            {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": plan.instance_types},
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
        ],
        "expireAfter": NODE_EXPIRY,
        "terminationGracePeriod": NODE_DRAIN_LIMIT,
    }
    if plan.pool == "gpu":
        spec["taints"] = [GPU_TAINT]
    return {
        "template": {"metadata": {"labels": node_labels(plan.pool, plan.market)}, "spec": spec},
        "limits": limits,
        "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": f"{EMPTY_NODE_S}s",
                       # Drift (a new AMI) replaces one node at a time.
                       "budgets": [{"nodes": "1"}]},
        # The cheaper market first when both could take a pod.
        "weight": 50 if plan.market == "spot" else 10,
    }


def node_class_spec(*, role: pulumi.Input[str], subnet_ids: list[pulumi.Input[str]],
                    security_group_id: pulumi.Input[str], ami_alias: str, disk_gb: int, nvme: bool,
                    tags: dict[str, str]) -> dict:
    spec = {
        "role": role,
        "amiSelectorTerms": [{"alias": ami_alias}],
        "subnetSelectorTerms": [{"id": subnet} for subnet in subnet_ids],
        # EKS's cluster security group: what every node carries (Redis admits it, the ALB
        # controller opens it to the load balancer).
        "securityGroupSelectorTerms": [{"id": security_group_id}],
        "metadataOptions": {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1,
                            "httpProtocolIPv6": "disabled"},
        "blockDeviceMappings": [{"deviceName": "/dev/xvda", "rootVolume": True, "ebs": {
            "volumeSize": f"{disk_gb}Gi", "volumeType": "gp3", "encrypted": True, "deleteOnTermination": True}}],
        "tags": tags,
    }
    if nvme:
        spec["instanceStorePolicy"] = "RAID0"
    return spec


def controller_policy(cluster_name: str, region: str, account_id: str, node_role_arn: str, queue_arn: str) -> str:
    """Launch and terminate only instances tagged for this cluster; pass only the node role;
    read only the interruption queue."""
    ec2 = f"arn:aws:ec2:{region}"
    owned = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}": "owned"}
    request_owned = {f"aws:RequestTag/kubernetes.io/cluster/{cluster_name}": "owned",
                     "aws:RequestTag/eks:eks-cluster-name": cluster_name}
    tagged = [f"{ec2}:*:{kind}/*" for kind in ("fleet", "instance", "volume", "network-interface", "launch-template",
                                               "spot-instances-request")]
    profile = f"arn:aws:iam::{account_id}:instance-profile/*"
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "LaunchFromSharedResources", "Effect": "Allow", "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
         "Resource": [f"{ec2}::image/*", f"{ec2}::snapshot/*", f"{ec2}:*:security-group/*", f"{ec2}:*:subnet/*",
                      f"{ec2}:*:capacity-reservation/*", f"{ec2}:*:placement-group/*"]},
        {"Sid": "LaunchFromOwnTemplates", "Effect": "Allow", "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
         "Resource": f"{ec2}:*:launch-template/*",
         "Condition": {"StringEquals": owned, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}}},
        {"Sid": "CreateTaggedForThisCluster", "Effect": "Allow",
         "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"], "Resource": tagged,
         "Condition": {"StringEquals": request_owned, "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"}}},
        {"Sid": "TagOnCreate", "Effect": "Allow", "Action": "ec2:CreateTags", "Resource": tagged,
         "Condition": {"StringEquals": {**request_owned,
                                        "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"]},
                       "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"}}},
        {"Sid": "TagOwnInstances", "Effect": "Allow", "Action": "ec2:CreateTags", "Resource": f"{ec2}:*:instance/*",
         "Condition": {"StringEquals": owned, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                       "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster_name},
                       "ForAllValues:StringEquals": {"aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim",
                                                                     "Name"]}}},
        {"Sid": "DeleteOwn", "Effect": "Allow", "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
         "Resource": [f"{ec2}:*:instance/*", f"{ec2}:*:launch-template/*"],
         "Condition": {"StringEquals": owned, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}}},
        {"Sid": "PassNodeRole", "Effect": "Allow", "Action": "iam:PassRole", "Resource": node_role_arn,
         "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}},
        {"Sid": "CreateInstanceProfiles", "Effect": "Allow", "Action": "iam:CreateInstanceProfile", "Resource": profile,
         "Condition": {"StringEquals": {**request_owned, "aws:RequestTag/topology.kubernetes.io/region": region},
                       "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"}}},
        {"Sid": "TagInstanceProfiles", "Effect": "Allow", "Action": "iam:TagInstanceProfile", "Resource": profile,
         "Condition": {"StringEquals": {**owned, "aws:ResourceTag/topology.kubernetes.io/region": region,
                                        **request_owned, "aws:RequestTag/topology.kubernetes.io/region": region},
                       "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                                      "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"}}},
        {"Sid": "ManageOwnInstanceProfiles", "Effect": "Allow", "Resource": profile,
         "Action": ["iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"],
         "Condition": {"StringEquals": {**owned, "aws:ResourceTag/topology.kubernetes.io/region": region},
                       "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"}}},
        {"Sid": "ReadInstanceProfiles", "Effect": "Allow", "Action": ["iam:GetInstanceProfile", "iam:ListInstanceProfiles"],
         "Resource": "*"},
        {"Sid": "DiscoverCluster", "Effect": "Allow", "Action": "eks:DescribeCluster",
         "Resource": f"arn:aws:eks:{region}:{account_id}:cluster/{cluster_name}"},
        {"Sid": "ReadInterruptions", "Effect": "Allow", "Resource": queue_arn,
         "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"]},
        {"Sid": "DescribeRegion", "Effect": "Allow", "Resource": "*",
         "Action": ["ec2:DescribeCapacityReservations", "ec2:DescribeImages", "ec2:DescribeInstances",
                    "ec2:DescribeInstanceStatus", "ec2:DescribeInstanceTypeOfferings", "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplates", "ec2:DescribePlacementGroups", "ec2:DescribeSecurityGroups",
                    "ec2:DescribeSpotPriceHistory", "ec2:DescribeSubnets"],
         "Condition": {"StringEquals": {"aws:RequestedRegion": region}}},
        {"Sid": "ReadAmiParameters", "Effect": "Allow", "Action": "ssm:GetParameter",
         "Resource": f"arn:aws:ssm:{region}::parameter/aws/service/*"},
        {"Sid": "ReadPrices", "Effect": "Allow", "Action": "pricing:GetProducts", "Resource": "*"},
    ]})


@dataclass(frozen=True)
class KarpenterArgs:
    naming: Naming
    config: StackConfig
    cluster_name: pulumi.Output[str]
    cluster_endpoint: pulumi.Output[str]
    issuer: OidcIssuer
    node_role: aws.iam.Role
    subnet_ids: list[pulumi.Output[str]]  # private
    security_group_id: pulumi.Output[str]


class Karpenter(pulumi.ComponentResource):
    node_pools: list[k8s.apiextensions.CustomResource]
    release: k8s.helm.v3.Release

    def __init__(self, name: str, args: KarpenterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("wxassist:infra:Karpenter", name, None, opts)
        config, naming = args.config, args.naming
        child = pulumi.ResourceOptions(parent=self)
        queue = aws.sqs.Queue(f"{name}-interruptions", message_retention_seconds=300, sqs_managed_sse_enabled=True,
                              tags=naming.tags, opts=child)
        aws.sqs.QueuePolicy(f"{name}-interruptions", queue_url=queue.url, opts=child,
                            policy=queue.arn.apply(lambda arn: json.dumps({"Version": "2012-10-17", "Statement": [
                                {"Effect": "Allow", "Principal": {"Service": ["events.amazonaws.com",
                                                                              "sqs.amazonaws.com"]},
                                 "Action": "sqs:SendMessage", "Resource": arn},
                                {"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "sqs:*",
                                 "Resource": arn, "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]})))
        for event, pattern in INTERRUPTION_EVENTS.items():
            rule = aws.cloudwatch.EventRule(f"{name}-{event}", event_pattern=json.dumps(pattern), tags=naming.tags,
                                            opts=child)
            aws.cloudwatch.EventTarget(f"{name}-{event}", rule=rule.name, arn=queue.arn, opts=child)

        # Karpenter's nodes join with the node role; EKS admits them through an access entry.
        access = aws.eks.AccessEntry(f"{name}-nodes", cluster_name=args.cluster_name,
                                     principal_arn=args.node_role.arn, type="EC2_LINUX", tags=naming.tags, opts=child)
        identity = aws.get_caller_identity_output(opts=pulumi.InvokeOptions(parent=self))
        policy = pulumi.Output.all(args.cluster_name, identity.account_id, args.node_role.arn, queue.arn).apply(
            lambda v: controller_policy(v[0], config.region, v[1], v[2], v[3]))
        role = service_account_role(f"{name}-controller", naming=naming, issuer=args.issuer, namespace=NAMESPACE,
                                    service_account=SERVICE_ACCOUNT, policy=policy, parent=self)
        self.release = k8s.helm.v3.Release(
            f"{name}", chart="oci://public.ecr.aws/karpenter/karpenter", version=config.charts.karpenter,
            namespace=NAMESPACE, opts=pulumi.ResourceOptions(parent=self, depends_on=[access]), values={
                **SYSTEM_ON_CPU,
                "replicas": 2 if config.highly_available else 1,
                "settings": {"clusterName": args.cluster_name, "clusterEndpoint": args.cluster_endpoint,
                             "interruptionQueue": queue.name},
                "serviceAccount": {"name": SERVICE_ACCOUNT,
                                   "annotations": {"eks.amazonaws.com/role-arn": role.arn}},
                "controller": {"resources": {"requests": {"cpu": "250m", "memory": "512Mi"},
                                             "limits": {"memory": "1Gi"}}},
            })
        after_crds = pulumi.ResourceOptions(parent=self, depends_on=[self.release])
        classes = {}
        for kind, disk_gb, nvme in (("gpu", config.gpu.disk_gb, True), ("cpu", 50, False)):
            classes[kind] = k8s.apiextensions.CustomResource(
                f"{name}-{kind}", api_version="karpenter.k8s.aws/v1", kind="EC2NodeClass",
                metadata={"name": kind, "labels": naming.labels},
                spec=node_class_spec(role=args.node_role.name, subnet_ids=args.subnet_ids,
                                     security_group_id=args.security_group_id,
                                     ami_alias=config.charts.node_ami_alias, disk_gb=disk_gb, nvme=nvme,
                                     tags=naming.tags),
                opts=after_crds)
        self.node_pools = [
            k8s.apiextensions.CustomResource(
                f"{name}-{plan.name}", api_version="karpenter.sh/v1", kind="NodePool",
                metadata={"name": plan.name, "labels": naming.labels},
                spec=node_pool_spec(plan, plan.pool),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.release, classes[plan.pool]]))
            for plan in pool_plans(config)]
        self.register_outputs({"interruption_queue": queue.name})

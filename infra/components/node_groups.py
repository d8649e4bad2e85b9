"""Managed node groups: one CPU group for the Ray head and system pods, and GPU groups split
by market so Ray can tell them apart (``ray.io/market-type``): an on-demand base that never
goes away (prod) and spot capacity that scales from zero for bursts (every stack).

Every group starts from a launch template that encrypts the root volume and makes the
instance metadata service unreachable from pods (tokens required, one hop): a pod gets AWS
rights only from its own service account's role, never the node's. Nodes take no SSH at all;
`kubectl debug node/…` or SSM reaches them when someone must.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config import Naming, StackConfig

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
GPU_TOLERATION = {"key": GPU_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}  # pods that may run there
POOL_LABEL = "wxassist/pool"
MARKET_LABEL = "ray.io/market-type"
# NVIDIA's device plugin chart only schedules on nodes that say they have a GPU.
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
NODE_POLICIES = ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly")


@dataclass(frozen=True)
class GpuGroupPlan:
    market: str  # "on-demand" or "spot", as the node label says
    capacity_type: str  # EKS: ON_DEMAND or SPOT
    min_size: int
    max_size: int  # what Ray's worker group may use
    node_max: int  # what the node group may hold: room for a RayService upgrade's second cluster


def gpu_group_plans(config: StackConfig) -> list[GpuGroupPlan]:
    """On-demand base at its size (the cluster autoscaler must not take it away), with room to
    double while KubeRay brings up an upgraded cluster beside the old one; spot from whatever
    min_nodes the base does not cover, up to spot_max."""
    plans = []
    base = config.gpu.on_demand_base
    if base:
        plans.append(GpuGroupPlan("on-demand", "ON_DEMAND", base, base, 2 * base))
    if config.gpu.spot_max:
        plans.append(GpuGroupPlan("spot", "SPOT", config.gpu_spot_min, config.gpu.spot_max, config.gpu.spot_max))
    return plans


def node_labels(pool: str, market: str) -> dict[str, str]:
    labels = {POOL_LABEL: pool, MARKET_LABEL: market}
    if pool == "gpu":
        labels[GPU_PRESENT_LABEL] = "true"
    return labels


@dataclass(frozen=True)
class NodeGroupsArgs:
    naming: Naming
    config: StackConfig
    cluster_name: pulumi.Output[str]
    subnet_ids: list[pulumi.Output[str]]  # private only


class NodeGroups(pulumi.ComponentResource):
    groups: list[aws.eks.NodeGroup]

    def __init__(self, name: str, args: NodeGroupsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("wxassist:infra:NodeGroups", name, None, opts)
        config, naming = args.config, args.naming
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(f"{name}-node", tags=naming.tags, opts=child, assume_role_policy=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))
        attachments = [aws.iam.RolePolicyAttachment(f"{name}-node-{policy}", role=role.name, opts=child,
                                                    policy_arn=f"arn:aws:iam::aws:policy/{policy}")
                       for policy in NODE_POLICIES]
        # The cluster autoscaler owns desired_size once the group exists.
        group_opts = pulumi.ResourceOptions(parent=self, depends_on=attachments,
                                            ignore_changes=["scalingConfig.desiredSize"])

        def group(group_name: str, *, capacity_type: str, instance_type: str, ami_type: str, disk_gb: int,
                  min_size: int, max_size: int, labels: dict[str, str], taint: bool) -> aws.eks.NodeGroup:
            template = aws.ec2.LaunchTemplate(
                group_name, tags=naming.tags, opts=child,
                metadata_options={"http_endpoint": "enabled", "http_tokens": "required",
                                  "http_put_response_hop_limit": 1},
                block_device_mappings=[{"device_name": "/dev/xvda", "ebs": {
                    "volume_size": disk_gb, "volume_type": "gp3", "encrypted": "true",
                    "delete_on_termination": "true"}}],
                tag_specifications=[{"resource_type": kind, "tags": naming.tags} for kind in ("instance", "volume")])
            return aws.eks.NodeGroup(
                group_name, cluster_name=args.cluster_name, node_role_arn=role.arn, subnet_ids=args.subnet_ids,
                capacity_type=capacity_type, instance_types=[instance_type], ami_type=ami_type,
                launch_template={"id": template.id, "version": template.latest_version.apply(str)},
                scaling_config={"min_size": min_size, "desired_size": min_size, "max_size": max(max_size, 1)},
                labels=labels, taints=[GPU_TAINT] if taint else [], update_config={"max_unavailable": 1},
                tags=naming.tags, opts=group_opts)

        self.groups = [group(
            f"{name}-cpu", capacity_type="ON_DEMAND", instance_type=config.cpu.instance_type,
            ami_type="AL2023_x86_64_STANDARD", disk_gb=50, min_size=config.cpu.min_nodes,
            max_size=config.cpu.max_nodes, labels=node_labels("cpu", "on-demand"), taint=False)]
        for plan in gpu_group_plans(config):
            self.groups.append(group(
                f"{name}-gpu-{plan.market}", capacity_type=plan.capacity_type, instance_type=config.gpu.instance_type,
                ami_type="AL2023_x86_64_NVIDIA", disk_gb=config.gpu.disk_gb, min_size=plan.min_size,
                max_size=plan.node_max, labels=node_labels("gpu", plan.market), taint=True))
        self.register_outputs({"node_groups": [g.node_group_name for g in self.groups]})

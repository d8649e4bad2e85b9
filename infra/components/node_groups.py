"""Managed node groups: one CPU group for the Ray head and system pods, and GPU groups split
by market so Ray can tell them apart (``ray.io/market-type``): an on-demand base that never
goes away (prod) and spot capacity that scales from zero for bursts (every stack)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config import Naming, StackConfig

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
POOL_LABEL = "wxassist/pool"
MARKET_LABEL = "ray.io/market-type"
NODE_POLICIES = ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly")


@dataclass(frozen=True)
class GpuGroupPlan:
    market: str  # "on-demand" or "spot", as the node label says
    capacity_type: str  # EKS: ON_DEMAND or SPOT
    min_size: int
    max_size: int


def gpu_group_plans(config: StackConfig) -> list[GpuGroupPlan]:
    """On-demand base fixed at its size (the cluster autoscaler must not take it away); spot
    from whatever min_nodes the base does not cover, up to spot_max."""
    plans = []
    base = config.gpu.on_demand_base
    if base:
        plans.append(GpuGroupPlan("on-demand", "ON_DEMAND", base, base))
    if config.gpu.spot_max:
        plans.append(GpuGroupPlan("spot", "SPOT", max(0, config.gpu.min_nodes - base), config.gpu.spot_max))
    return plans


def autoscaler_tags(cluster_name: str, labels: dict[str, str], gpus: int, taint: bool) -> dict[str, str]:
    """What the cluster autoscaler reads to scale a group up from zero nodes: it cannot look at
    a node that does not exist, so the group's tags describe one."""
    template = "k8s.io/cluster-autoscaler/node-template"
    tags = {"k8s.io/cluster-autoscaler/enabled": "true", f"k8s.io/cluster-autoscaler/{cluster_name}": "owned"}
    tags.update({f"{template}/label/{key}": value for key, value in labels.items()})
    if gpus:
        tags[f"{template}/resources/nvidia.com/gpu"] = str(gpus)
    if taint:
        tags[f"{template}/taint/{GPU_TAINT['key']}"] = f"{GPU_TAINT['value']}:NoSchedule"
    return tags


@dataclass(frozen=True)
class NodeGroupsArgs:
    naming: Naming
    config: StackConfig
    cluster_name: pulumi.Output[str]
    vpc_id: pulumi.Output[str]
    subnet_ids: list[pulumi.Output[str]]  # private only


class NodeGroups(pulumi.ComponentResource):
    gpu_groups: dict[str, aws.eks.NodeGroup]

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
        # SSH is off unless asked for, and then only from the listed networks: a node group
        # with a key but no source security group would accept port 22 from anywhere.
        remote_access = None
        if config.ssh_cidrs:
            ssh = aws.ec2.SecurityGroup(
                f"{name}-ssh", vpc_id=args.vpc_id, description="SSH to wxassist nodes from ssh_cidrs only",
                ingress=[{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_blocks": config.ssh_cidrs}],
                tags=naming.tags, opts=child)
            remote_access = {"ec2_ssh_key": config.ssh_key_name, "source_security_group_ids": [ssh.id]}
        # The autoscaler owns desired_size once the group exists.
        group_opts = pulumi.ResourceOptions(parent=self, depends_on=attachments,
                                            ignore_changes=["scalingConfig.desiredSize"])

        def group(group_name: str, *, capacity_type: str, instance_type: str, ami_type: str, disk_gb: int,
                  min_size: int, max_size: int, labels: dict[str, str], gpus: int, taint: bool) -> aws.eks.NodeGroup:
            tags = args.cluster_name.apply(lambda cluster: {
                **naming.tags, **autoscaler_tags(cluster, labels, gpus, taint)})
            return aws.eks.NodeGroup(
                group_name, cluster_name=args.cluster_name, node_role_arn=role.arn, subnet_ids=args.subnet_ids,
                capacity_type=capacity_type, instance_types=[instance_type], ami_type=ami_type, disk_size=disk_gb,
                scaling_config={"min_size": min_size, "desired_size": min_size, "max_size": max(max_size, 1)},
                labels=labels, taints=[GPU_TAINT] if taint else [], remote_access=remote_access,
                update_config={"max_unavailable": 1}, tags=tags, opts=group_opts)

        self.cpu_group = group(
            f"{name}-cpu", capacity_type="ON_DEMAND", instance_type=config.cpu.instance_type, ami_type="AL2023_x86_64_STANDARD",
            disk_gb=50, min_size=config.cpu.min_nodes, max_size=config.cpu.max_nodes,
            labels={POOL_LABEL: "cpu", MARKET_LABEL: "on-demand"}, gpus=0, taint=False)
        self.gpu_groups = {}
        for plan in gpu_group_plans(config):
            self.gpu_groups[plan.market] = group(
                f"{name}-gpu-{plan.market}", capacity_type=plan.capacity_type, instance_type=config.gpu.instance_type,
                ami_type="AL2023_x86_64_NVIDIA", disk_gb=config.gpu.disk_gb, min_size=plan.min_size,
                max_size=plan.max_size, labels={POOL_LABEL: "gpu", MARKET_LABEL: plan.market},
                gpus=config.gpu_node.gpus, taint=True)
        self.register_outputs({"gpu_groups": {market: g.node_group_name for market, g in self.gpu_groups.items()}})

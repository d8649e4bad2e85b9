"""The system node group: a fixed managed group of on-demand CPU nodes that runs what must
never be disrupted by an autoscaler: the controllers (Karpenter itself cannot run on nodes it
manages), the Ray head, and the first CPU worker. Everything that scales (GPU workers, more
CPU workers) comes from Karpenter's node pools (``components/karpenter.py``).

The node role here is shared by Karpenter's nodes. The system group starts from a launch
template that encrypts the root volume and makes the instance metadata service unreachable
from pods (tokens required, one hop): a pod gets AWS rights only from its own service
account's role, never the node's. Nodes take no SSH at all; SSM Session Manager
(``AmazonSSMManagedInstanceCore``) or ``kubectl debug node/…`` reaches them when someone must.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config import Naming, StackConfig

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}
GPU_TOLERATION = {"key": GPU_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}  # pods that may run there
POOL_LABEL = "wxassist/pool"  # cpu | gpu: which pods a node takes
SYSTEM_LABEL = "wxassist/system"  # "true" on the fixed group: the Ray head and the controllers
MARKET_LABEL = "ray.io/market-type"  # spot | on-demand: also the Ray node label the deploy files select on
CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"  # what Karpenter launched: spot | on-demand
# NVIDIA's device plugin chart only schedules on nodes that say they have a GPU.
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
NODE_POLICIES = ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy",
                 # Pull only: the nodes never push an image.
                 "AmazonEC2ContainerRegistryPullOnly",
                 # SSM Session Manager instead of SSH.
                 "AmazonSSMManagedInstanceCore")
SYSTEM_ON_CPU = {"nodeSelector": {SYSTEM_LABEL: "true"}}  # Helm values for a controller


def node_labels(pool: str, market: str, *, system: bool = False) -> dict[str, str]:
    labels = {POOL_LABEL: pool, MARKET_LABEL: market}
    if pool == "gpu":
        labels[GPU_PRESENT_LABEL] = "true"
    if system:
        labels[SYSTEM_LABEL] = "true"
    return labels


@dataclass(frozen=True)
class NodeGroupsArgs:
    naming: Naming
    config: StackConfig
    cluster_name: pulumi.Output[str]
    subnet_ids: list[pulumi.Output[str]]  # private only


class NodeGroups(pulumi.ComponentResource):
    groups: list[aws.eks.NodeGroup]
    role: aws.iam.Role  # every node's role: the system group's and Karpenter's

    def __init__(self, name: str, args: NodeGroupsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("wxassist:infra:NodeGroups", name, None, opts)
        config, naming = args.config, args.naming
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(f"{name}-node", tags=naming.tags, opts=child, assume_role_policy=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))
        attachments = [aws.iam.RolePolicyAttachment(f"{name}-node-{policy}", role=self.role.name, opts=child,
                                                    policy_arn=f"arn:aws:iam::aws:policy/{policy}")
                       for policy in NODE_POLICIES]
        template = aws.ec2.LaunchTemplate(
            f"{name}-system", tags=naming.tags, opts=child,
            metadata_options={"http_endpoint": "enabled", "http_tokens": "required",
                              "http_put_response_hop_limit": 1},
            block_device_mappings=[{"device_name": "/dev/xvda", "ebs": {
                "volume_size": 80, "volume_type": "gp3", "encrypted": "true", "delete_on_termination": "true"}}],
            tag_specifications=[{"resource_type": kind, "tags": naming.tags} for kind in ("instance", "volume")])
        # A fixed size: nothing scales this group, so nothing can drain the head or Karpenter.
        size = config.cpu.min_nodes
        self.groups = [aws.eks.NodeGroup(
            f"{name}-system", cluster_name=args.cluster_name, node_role_arn=self.role.arn, subnet_ids=args.subnet_ids,
            capacity_type="ON_DEMAND", instance_types=[config.cpu.instance_type], ami_type="AL2023_x86_64_STANDARD",
            launch_template={"id": template.id, "version": template.latest_version.apply(str)},
            scaling_config={"min_size": size, "desired_size": size, "max_size": size},
            labels=node_labels("cpu", "on-demand", system=True), update_config={"max_unavailable": 1},
            tags=naming.tags, opts=pulumi.ResourceOptions(parent=self, depends_on=attachments))]
        self.register_outputs({"node_groups": [g.node_group_name for g in self.groups], "node_role": self.role.arn})

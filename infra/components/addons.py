"""What the cluster runs besides wxassist: the KubeRay operator (turns the RayService into
Ray pods), NVIDIA's device plugin (makes GPUs schedulable), and the cluster autoscaler
(adds a node when Ray's autoscaler asks for a pod no node can take; removes idle ones)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.components.identity import OidcIssuer, service_account_role
from infra.components.node_groups import GPU_TOLERATION, POOL_LABEL
from infra.config import Charts, Naming

AUTOSCALER_NAMESPACE = "kube-system"
AUTOSCALER_ACCOUNT = "cluster-autoscaler"
# Scale-down waits this long: a GPU node that comes back costs a model restore.
SCALE_DOWN_UNNEEDED = "10m"



def autoscaler_policy(cluster_name: str) -> str:
    """Describe anything; resize only this cluster's groups (EKS tags every managed group's
    Auto Scaling group with ``k8s.io/cluster-autoscaler/<cluster>: owned``)."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Resource": "*", "Action": [
            "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
            "autoscaling:DescribeLaunchConfigurations", "autoscaling:DescribeScalingActivities",
            "autoscaling:DescribeTags", "ec2:DescribeImages", "ec2:DescribeInstanceTypes",
            "ec2:DescribeLaunchTemplateVersions", "ec2:GetInstanceTypesFromInstanceRequirements",
            # Labels and taints of a group with no nodes yet: how it scales up from zero.
            "eks:DescribeNodegroup"]},
        {"Effect": "Allow", "Resource": "*",
         "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
         "Condition": {"StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"}}},
    ]})


@dataclass(frozen=True)
class AddonsArgs:
    naming: Naming
    charts: Charts
    cluster_name: pulumi.Output[str]
    region: str
    issuer: OidcIssuer


class ClusterAddons(pulumi.ComponentResource):
    def __init__(self, name: str, args: AddonsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("wxassist:infra:ClusterAddons", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        on_cpu_nodes = {"nodeSelector": {POOL_LABEL: "cpu"}}
        self.kuberay = k8s.helm.v3.Release(
            f"{name}-kuberay", chart="kuberay-operator", version=args.charts.kuberay_operator,
            repository_opts={"repo": "https://ray-project.github.io/kuberay-helm/"},
            namespace="kuberay-system", create_namespace=True, values=on_cpu_nodes, opts=child)
        k8s.helm.v3.Release(
            f"{name}-nvidia-device-plugin", chart="nvidia-device-plugin", version=args.charts.nvidia_device_plugin,
            repository_opts={"repo": "https://nvidia.github.io/k8s-device-plugin"},
            namespace="kube-system", opts=child, values={
                "nodeSelector": {POOL_LABEL: "gpu"},
                "tolerations": [GPU_TOLERATION]})
        role = service_account_role(
            f"{name}-autoscaler", naming=args.naming, issuer=args.issuer, namespace=AUTOSCALER_NAMESPACE,
            service_account=AUTOSCALER_ACCOUNT, policy=args.cluster_name.apply(autoscaler_policy), parent=self)
        k8s.helm.v3.Release(
            f"{name}-cluster-autoscaler", chart="cluster-autoscaler", version=args.charts.cluster_autoscaler,
            repository_opts={"repo": "https://kubernetes.github.io/autoscaler"},
            namespace=AUTOSCALER_NAMESPACE, opts=child, values={
                **on_cpu_nodes,
                "cloudProvider": "aws", "awsRegion": args.region,
                "autoDiscovery": {"clusterName": args.cluster_name},
                "rbac": {"serviceAccount": {"name": AUTOSCALER_ACCOUNT,
                                            "annotations": {"eks.amazonaws.com/role-arn": role.arn}}},
                "extraArgs": {"scale-down-unneeded-time": SCALE_DOWN_UNNEEDED, "balance-similar-node-groups": True,
                              "skip-nodes-with-system-pods": False, "expander": "least-waste"},
            })
        self.register_outputs({})

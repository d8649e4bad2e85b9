"""What the cluster runs besides wxassist and Karpenter: the KubeRay operator (turns the
RayService into Ray pods), NVIDIA's device plugin (makes GPUs schedulable), the AWS Load
Balancer Controller (turns the callback Ingress into an ALB whose targets are the Serve
proxies' pod IPs), and External Secrets (copies the stack's Secrets Manager secrets into the
Kubernetes Secret the pods read). All of them run on the system node group."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.components.identity import OidcIssuer, service_account_role
from infra.components.node_groups import GPU_PRESENT_LABEL, GPU_TOLERATION, SYSTEM_ON_CPU
from infra.config import Charts, Naming

LBC_NAMESPACE = "kube-system"
LBC_ACCOUNT = "aws-load-balancer-controller"
ESO_NAMESPACE = "external-secrets"


def load_balancer_controller_policy() -> str:
    """The controller's rights, condensed from its published iam_policy.json (v2.17): read the
    VPC and ELB, create load balancers and security groups tagged as its own, and change only
    what carries those tags."""
    own_lb = {"Null": {"aws:ResourceTag/elbv2.k8s.aws/cluster": "false"}}
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Resource": "*", "Action": ["iam:CreateServiceLinkedRole"],
         "Condition": {"StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}}},
        {"Effect": "Allow", "Resource": "*", "Action": [
            "ec2:DescribeAccountAttributes", "ec2:DescribeAddresses", "ec2:DescribeAvailabilityZones",
            "ec2:DescribeInternetGateways", "ec2:DescribeVpcs", "ec2:DescribeVpcPeeringConnections",
            "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeInstances",
            "ec2:DescribeNetworkInterfaces", "ec2:DescribeTags", "ec2:DescribeRouteTables", "ec2:DescribeIpamPools",
            "ec2:GetCoipPoolUsage", "ec2:DescribeCoipPools", "ec2:GetSecurityGroupsForVpc",
            "elasticloadbalancing:Describe*", "acm:ListCertificates", "acm:DescribeCertificate",
            "wafv2:GetWebACL", "wafv2:GetWebACLForResource", "wafv2:AssociateWebACL", "wafv2:DisassociateWebACL",
            "shield:GetSubscriptionState", "shield:DescribeProtection", "shield:CreateProtection",
            "shield:DeleteProtection", "cognito-idp:DescribeUserPoolClient"]},
        {"Effect": "Allow", "Resource": "*", "Action": ["ec2:CreateSecurityGroup"]},
        {"Effect": "Allow", "Resource": "arn:aws:ec2:*:*:security-group/*", "Action": ["ec2:CreateTags"],
         "Condition": {"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"},
                       "Null": {"aws:RequestTag/elbv2.k8s.aws/cluster": "false"}}},
        {"Effect": "Allow", "Resource": "*",
         "Action": ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", "ec2:DeleteSecurityGroup",
                    "ec2:CreateTags", "ec2:DeleteTags"], "Condition": own_lb},
        # The cluster security group the targets sit in: the controller opens it to its ALB.
        {"Effect": "Allow", "Resource": "*",
         "Action": ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"]},
        {"Effect": "Allow", "Resource": "*",
         "Action": ["elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup"],
         "Condition": {"Null": {"aws:RequestTag/elbv2.k8s.aws/cluster": "false"}}},
        {"Effect": "Allow", "Resource": "*",
         "Action": ["elasticloadbalancing:CreateListener", "elasticloadbalancing:DeleteListener",
                    "elasticloadbalancing:CreateRule", "elasticloadbalancing:DeleteRule"]},
        {"Effect": "Allow", "Resource": ["arn:aws:elasticloadbalancing:*:*:targetgroup/*/*",
                                         "arn:aws:elasticloadbalancing:*:*:loadbalancer/app/*/*",
                                         "arn:aws:elasticloadbalancing:*:*:loadbalancer/net/*/*"],
         "Action": ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"]},
        {"Effect": "Allow", "Resource": "*", "Condition": own_lb, "Action": [
            "elasticloadbalancing:ModifyLoadBalancerAttributes", "elasticloadbalancing:SetIpAddressType",
            "elasticloadbalancing:SetSecurityGroups", "elasticloadbalancing:SetSubnets",
            "elasticloadbalancing:DeleteLoadBalancer", "elasticloadbalancing:ModifyTargetGroup",
            "elasticloadbalancing:ModifyTargetGroupAttributes", "elasticloadbalancing:DeleteTargetGroup",
            "elasticloadbalancing:ModifyListenerAttributes", "elasticloadbalancing:ModifyCapacityReservation",
            "elasticloadbalancing:ModifyIpPools"]},
        {"Effect": "Allow", "Resource": "arn:aws:elasticloadbalancing:*:*:targetgroup/*/*",
         "Action": ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"]},
        {"Effect": "Allow", "Resource": "*", "Action": [
            "elasticloadbalancing:SetWebAcl", "elasticloadbalancing:ModifyListener",
            "elasticloadbalancing:AddListenerCertificates", "elasticloadbalancing:RemoveListenerCertificates",
            "elasticloadbalancing:ModifyRule", "elasticloadbalancing:SetRulePriorities"]},
    ]})


@dataclass(frozen=True)
class AddonsArgs:
    naming: Naming
    charts: Charts
    cluster_name: pulumi.Output[str]
    region: str
    vpc_id: pulumi.Output[str]
    issuer: OidcIssuer
    highly_available: bool


class ClusterAddons(pulumi.ComponentResource):
    kuberay: k8s.helm.v3.Release
    external_secrets: k8s.helm.v3.Release
    load_balancer_controller: k8s.helm.v3.Release

    def __init__(self, name: str, args: AddonsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("wxassist:infra:ClusterAddons", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        replicas = 2 if args.highly_available else 1
        self.kuberay = k8s.helm.v3.Release(
            f"{name}-kuberay", chart="kuberay-operator", version=args.charts.kuberay_operator,
            repository_opts={"repo": "https://ray-project.github.io/kuberay-helm/"},
            namespace="kuberay-system", create_namespace=True, values=SYSTEM_ON_CPU, opts=child)
        k8s.helm.v3.Release(
            f"{name}-nvidia-device-plugin", chart="nvidia-device-plugin", version=args.charts.nvidia_device_plugin,
            repository_opts={"repo": "https://nvidia.github.io/k8s-device-plugin"},
            namespace="kube-system", opts=child, values={
                "nodeSelector": {GPU_PRESENT_LABEL: "true"},
                "tolerations": [GPU_TOLERATION]})
        role = service_account_role(
            f"{name}-load-balancer-controller", naming=args.naming, issuer=args.issuer, namespace=LBC_NAMESPACE,
            service_account=LBC_ACCOUNT, policy=load_balancer_controller_policy(), parent=self)
        self.load_balancer_controller = k8s.helm.v3.Release(
            f"{name}-aws-load-balancer-controller", chart="aws-load-balancer-controller",
            version=args.charts.aws_load_balancer_controller,
            repository_opts={"repo": "https://aws.github.io/eks-charts"}, namespace=LBC_NAMESPACE, opts=child,
            values={**SYSTEM_ON_CPU, "replicaCount": replicas, "clusterName": args.cluster_name,
                    "region": args.region, "vpcId": args.vpc_id,
                    "serviceAccount": {"name": LBC_ACCOUNT,
                                       "annotations": {"eks.amazonaws.com/role-arn": role.arn}}})
        # No AWS rights of its own: each SecretStore names the service account (and so the
        # role) it reads with.
        self.external_secrets = k8s.helm.v3.Release(
            f"{name}-external-secrets", chart="external-secrets", version=args.charts.external_secrets,
            repository_opts={"repo": "https://charts.external-secrets.io"}, namespace=ESO_NAMESPACE,
            create_namespace=True, opts=child,
            values={**SYSTEM_ON_CPU, "installCRDs": True, "replicaCount": replicas,
                    "webhook": SYSTEM_ON_CPU, "certController": SYSTEM_ON_CPU})
        self.register_outputs({})

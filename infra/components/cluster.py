"""The EKS control plane, its OIDC issuer (for IRSA) and a Kubernetes provider for it."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.components.identity import OidcIssuer
from infra.config import Naming


@dataclass(frozen=True)
class ClusterArgs:
    naming: Naming
    kubernetes_version: str
    subnet_ids: list[pulumi.Output[str]]  # private and public: nodes private, load balancers public
    region: str
    api_cidrs: list[str]  # who may reach the public API endpoint (IAM auth still applies)


def kubeconfig(name: str, endpoint: str, authority: str, region: str) -> str:
    """Authenticates with `aws eks get-token`, so no long-lived credential is stored."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": endpoint, "certificate-authority-data": authority}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "users": [{"name": name, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws",
            "args": ["eks", "get-token", "--cluster-name", name, "--region", region]}}}],
    })


class Cluster(pulumi.ComponentResource):
    name: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    security_group_id: pulumi.Output[str]  # EKS's cluster security group: on every managed node
    issuer: OidcIssuer
    kubeconfig: pulumi.Output[str]
    provider: k8s.Provider

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("wxassist:infra:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(f"{name}-control-plane", tags=args.naming.tags, opts=child, assume_role_policy=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "eks.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))
        attachment = aws.iam.RolePolicyAttachment(
            f"{name}-control-plane", role=role.name, opts=child,
            policy_arn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy")
        cluster = aws.eks.Cluster(
            name, name=args.naming.prefix, version=args.kubernetes_version, role_arn=role.arn,
            vpc_config={"subnet_ids": args.subnet_ids, "endpoint_private_access": True,
                        "endpoint_public_access": True, "public_access_cidrs": args.api_cidrs},
            access_config={"authentication_mode": "API", "bootstrap_cluster_creator_admin_permissions": True},
            enabled_cluster_log_types=["api", "audit", "authenticator"],
            tags=args.naming.tags, opts=pulumi.ResourceOptions(parent=self, depends_on=[attachment]))
        issuer_url = cluster.identities[0].oidcs[0].issuer
        oidc = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc", url=issuer_url, client_id_lists=["sts.amazonaws.com"], tags=args.naming.tags, opts=child)

        self.name = cluster.name
        self.endpoint = cluster.endpoint
        self.security_group_id = cluster.vpc_config.cluster_security_group_id
        self.issuer = OidcIssuer(provider_arn=oidc.arn, url=issuer_url)
        self.kubeconfig = pulumi.Output.secret(pulumi.Output.all(
            cluster.name, cluster.endpoint, cluster.certificate_authority.data,
        ).apply(lambda values: kubeconfig(values[0], values[1], values[2], args.region)))
        self.provider = k8s.Provider(f"{name}-k8s", kubeconfig=self.kubeconfig, opts=child)
        self.register_outputs({"name": self.name, "kubeconfig": self.kubeconfig})

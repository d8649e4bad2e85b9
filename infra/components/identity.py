"""IAM roles that Kubernetes service accounts assume (IRSA): a pod gets exactly the AWS
rights its role names, through the cluster's OIDC issuer, with no keys to leak."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.config import Naming


@dataclass(frozen=True)
class OidcIssuer:
    provider_arn: pulumi.Output[str]
    url: pulumi.Output[str]  # https://oidc.eks.<region>.amazonaws.com/id/<id>


def assume_role_policy(issuer: OidcIssuer, namespace: str, service_account: str) -> pulumi.Output[str]:
    """Only this one service account of this cluster may assume the role."""
    def document(arn: str, url: str) -> str:
        host = url.removeprefix("https://")
        return json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {
                f"{host}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                f"{host}:aud": "sts.amazonaws.com"}},
        }]})
    return pulumi.Output.all(issuer.provider_arn, issuer.url).apply(lambda values: document(*values))


def service_account_role(name: str, *, naming: Naming, issuer: OidcIssuer, namespace: str, service_account: str,
                         policy: pulumi.Input[str], parent: pulumi.Resource) -> aws.iam.Role:
    """A role for one service account, with one inline policy and nothing attached besides."""
    role = aws.iam.Role(name, assume_role_policy=assume_role_policy(issuer, namespace, service_account),
                        tags=naming.tags, opts=pulumi.ResourceOptions(parent=parent))
    aws.iam.RolePolicy(name, role=role.id, policy=policy, opts=pulumi.ResourceOptions(parent=parent))
    return role


def bucket_read_policy(bucket_arn: pulumi.Input[str]) -> pulumi.Output[str]:
    """Read the model bucket (objects and their versions, and listing it); nothing else."""
    return pulumi.Output.from_input(bucket_arn).apply(lambda arn: json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketLocation"],
             "Resource": arn},
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion"], "Resource": f"{arn}/*"},
        ]}))


@dataclass(frozen=True)
class ReplicaIdentityArgs:
    naming: Naming
    issuer: OidcIssuer
    namespace: str  # created by the stack; opts.depends_on orders it first
    service_account: str
    bucket_arn: pulumi.Input[str] | None  # None: a MinIO store, whose read-only keys come as a Secret


class ReplicaIdentity(pulumi.ComponentResource):
    """The service account every Ray pod runs as; on S3 stacks, bound to a role that may only
    read the model bucket (restore and verify need no more)."""

    service_account_name: pulumi.Output[str]
    role_arn: pulumi.Output[str] | None

    def __init__(self, name: str, args: ReplicaIdentityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("wxassist:infra:ReplicaIdentity", name, None, opts)
        annotations: dict[str, pulumi.Input[str]] = {}
        self.role_arn = None
        if args.bucket_arn is not None:
            role = service_account_role(
                f"{name}-role", naming=args.naming, issuer=args.issuer, namespace=args.namespace,
                service_account=args.service_account, policy=bucket_read_policy(args.bucket_arn), parent=self)
            annotations["eks.amazonaws.com/role-arn"] = role.arn
            self.role_arn = role.arn
        account = k8s.core.v1.ServiceAccount(
            name, metadata={"name": args.service_account, "namespace": args.namespace,
                            "labels": args.naming.labels, "annotations": annotations},
            opts=pulumi.ResourceOptions(parent=self))
        self.service_account_name = account.metadata.name
        self.register_outputs({"service_account_name": self.service_account_name, "role_arn": self.role_arn})

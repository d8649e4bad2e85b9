"""Redis for the ledger, outbox, memory and limits (``WXA_STATE_URI``), and for Ray's GCS
fault tolerance (under the Ray cluster's own key prefix): reachable only from the cluster's
nodes, password-protected, TLS in transit, encrypted at rest."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from infra.config import Naming

REDIS_PORT = 6379


@dataclass(frozen=True)
class StateStoreArgs:
    naming: Naming
    vpc_id: pulumi.Output[str]
    subnet_ids: list[pulumi.Output[str]]  # private
    client_security_group_id: pulumi.Output[str]  # the cluster's: every node carries it
    node_type: str
    replicas: int  # >= 1: automatic failover to another zone
    snapshot_days: int


def state_uri(token: str, host: str) -> str:
    return f"rediss://:{token}@{host}:{REDIS_PORT}/0"


class RedisStateStore(pulumi.ComponentResource):
    state_uri: pulumi.Output[str]  # secret: it carries the auth token
    auth_token: pulumi.Output[str]  # secret
    gcs_address: pulumi.Output[str]  # rediss://host:port for Ray's GCS fault tolerance (no credentials)

    def __init__(self, name: str, args: StateStoreArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("wxassist:infra:RedisStateStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        subnets = aws.elasticache.SubnetGroup(name, subnet_ids=args.subnet_ids, tags=args.naming.tags, opts=child)
        firewall = aws.ec2.SecurityGroup(
            f"{name}-redis", vpc_id=args.vpc_id, description="Redis from the cluster's nodes only",
            ingress=[{"protocol": "tcp", "from_port": REDIS_PORT, "to_port": REDIS_PORT,
                      "security_groups": [args.client_security_group_id]}],
            tags=args.naming.tags, opts=child)
        # ElastiCache accepts 16-128 printable characters without @, " or /; letters and
        # digits keep the token safe inside a URI too.
        token = random.RandomPassword(f"{name}-auth", length=64, special=False, opts=child)
        failover = args.replicas >= 1
        group = aws.elasticache.ReplicationGroup(
            name, description=f"wxassist state ({args.naming.stack})", engine="redis", engine_version="7.1",
            node_type=args.node_type, num_cache_clusters=1 + args.replicas, port=REDIS_PORT,
            automatic_failover_enabled=failover, multi_az_enabled=failover,
            transit_encryption_enabled=True, at_rest_encryption_enabled=True, auth_token=token.result,
            subnet_group_name=subnets.name, security_group_ids=[firewall.id],
            snapshot_retention_limit=args.snapshot_days, apply_immediately=not failover,
            tags=args.naming.tags, opts=child)
        self.state_uri = pulumi.Output.secret(pulumi.Output.all(token.result, group.primary_endpoint_address).apply(
            lambda values: state_uri(values[0], values[1])))
        self.auth_token = pulumi.Output.secret(token.result)
        self.gcs_address = group.primary_endpoint_address.apply(lambda host: f"rediss://{host}:{REDIS_PORT}")
        self.register_outputs({"endpoint": group.primary_endpoint_address})

"""One stack, wired: network, cluster, node groups, add-ons, model bucket, Redis, tracing,
the replicas' identity and the RayService. Every knob comes from ``StackConfig``; every AWS
resource goes through one provider that tags it with the stack and project."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.components.addons import AddonsArgs, ClusterAddons
from infra.components.bucket import BucketArgs, MinioBucketArgs, MinioModelBucket, S3ModelBucket
from infra.components.cluster import Cluster, ClusterArgs
from infra.components.identity import ReplicaIdentity, ReplicaIdentityArgs
from infra.components.network import Network, NetworkArgs
from infra.components.node_groups import NodeGroups, NodeGroupsArgs
from infra.components.ray_service import WxassistService, WxassistServiceArgs
from infra.components.state_store import RedisStateStore, StateStoreArgs
from infra.components.tracing import CollectorArgs, TracingCollector
from infra.components.ray_service import WXA_HOME
from infra.config import Naming, StackConfig, StackSecrets, read_stack_config, read_stack_secrets

SERVICE_ACCOUNT = "wxassist"


def build_stack(config: StackConfig, secrets: StackSecrets, naming: Naming) -> dict[str, pulumi.Input]:
    serve = config.load_serve()  # refused here, before any resource, if it cannot run
    import ray  # the version the service pins too (infra/requirements.txt)

    aws_provider = aws.Provider("aws", region=config.region, default_tags={"tags": naming.tags})
    on_aws = pulumi.ResourceOptions(providers={"aws": aws_provider})

    network = Network("network", NetworkArgs(naming, config.vpc_cidr, config.zones,
                                             nat_gateways=config.nat_gateways, region=config.region), opts=on_aws)
    cluster = Cluster("cluster", ClusterArgs(naming, config.kubernetes_version,
                                             network.private_subnet_ids + network.public_subnet_ids,
                                             config.region, config.api_cidrs), opts=on_aws)
    nodes = NodeGroups("nodes", NodeGroupsArgs(naming, config, cluster.name, network.private_subnet_ids), opts=on_aws)
    on_cluster = pulumi.ResourceOptions(providers={"aws": aws_provider, "kubernetes": cluster.provider})
    # Helm waits for its pods: the charts go in once there are nodes to run them.
    addons = ClusterAddons("addons", AddonsArgs(naming, config.charts, cluster.name, config.region, cluster.issuer),
                           opts=pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=nodes.groups)))
    namespace = k8s.core.v1.Namespace("namespace", metadata={"name": config.namespace, "labels": naming.labels},
                                      opts=pulumi.ResourceOptions(provider=cluster.provider))
    in_namespace = pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=[namespace]))

    bucket_args = dict(naming=naming, noncurrent_version_days=config.noncurrent_version_days,
                       abort_multipart_days=config.abort_multipart_days)
    env: dict[str, pulumi.Input[str]] = {"WXA_MODEL": config.model}
    secret_env: dict[str, pulumi.Input[str]] = {}
    if config.object_store == "s3":
        bucket = S3ModelBucket("models", BucketArgs(**bucket_args), opts=on_aws)
        bucket_arn = bucket.bucket_arn
        env.update(WXA_MODEL_STORE=bucket.store_uri, WXA_S3_REGION=config.region)
    else:
        assert config.minio is not None and secrets.minio_password is not None  # StackConfig's guardrail
        bucket = MinioModelBucket("models", MinioBucketArgs(**bucket_args, store=config.minio,
                                                            admin_password=secrets.minio_password))
        bucket_arn = None
        env.update(WXA_MODEL_STORE=bucket.store_uri, WXA_S3_ENDPOINT=bucket.endpoint_url)
        secret_env.update(WXA_S3_ACCESS_KEY=bucket.reader_access_key, WXA_S3_SECRET_KEY=bucket.reader_secret_key)

    state = RedisStateStore("state", StateStoreArgs(
        naming, network.vpc_id, network.private_subnet_ids, cluster.security_group_id, config.redis_node_type,
        config.redis_replicas, snapshot_days=7 if config.highly_available else 1), opts=on_aws)
    tracing = TracingCollector("tracing", CollectorArgs(
        naming, config.namespace, config.charts.otel_collector_image, config.otel_backend_endpoint,
        replicas=2 if config.highly_available else 1), opts=in_namespace)
    identity = ReplicaIdentity("replicas", ReplicaIdentityArgs(
        naming, cluster.issuer, config.namespace, SERVICE_ACCOUNT, bucket_arn), opts=in_namespace)

    # Real accounts only: every process refuses development credentials, the emulator or
    # MinIO's default keys (functions/common/settings.py, production_problems).
    env.update(WXA_ENVIRONMENT="production", WXA_HOME=WXA_HOME, WXA_TRACE_EXPORTER="otlp",
               OTEL_EXPORTER_OTLP_ENDPOINT=tracing.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
               WXA_WECHAT_APPID=config.wechat_appid, WXA_WECHAT_KIND=config.wechat_kind)
    if config.kb_uri:
        env["WXA_KB_URI"] = config.kb_uri
    secret_env.update(WXA_STATE_URI=state.state_uri, WXA_WECHAT_TOKEN=secrets.wechat_token,
                      WXA_WECHAT_AES_KEY=secrets.wechat_aes_key, WXA_WECHAT_SECRET=secrets.wechat_secret)
    service = WxassistService("wxassist", WxassistServiceArgs(
        naming, config, serve, ray.__version__, identity.service_account_name, env, secret_env),
        opts=pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(depends_on=[addons.kuberay])))

    return {
        "cluster_name": cluster.name,
        "kubeconfig": cluster.kubeconfig,  # secret
        "model_store": bucket.store_uri,
        "model_bucket": bucket.bucket_name,
        "ray_service": service.name,
        "callback_service": f"{config.namespace}/{service.callback_service}",
        "callback_url": service.callback_host.apply(
            lambda host: f"{'https' if config.tls_certificate_arn else 'http'}://{host}/wechat/default"),
        "otlp_endpoint": tracing.endpoint,
    }


def program(naming: Naming) -> dict[str, pulumi.Input]:
    """What ``pulumi up`` runs (``__main__.py``) and what the tests run under mocks: the
    running stack's settings and secrets, read once, then the stack."""
    config = read_stack_config()
    return build_stack(config, read_stack_secrets(config), naming)

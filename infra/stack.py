"""One stack, wired: network, cluster, system nodes, Karpenter's pools, add-ons, the image
registry, model bucket, Redis, secrets, tracing, the replicas' identity, the RayService and
the callback endpoint. Every knob comes from ``StackConfig``; every AWS resource goes through
one provider that tags it with the stack and project.

The first ``pulumi up`` on a fresh account has no images to run yet: it builds everything but
the RayService, and its outputs say what to do next (``make image``, then set
``wxassist:image_digests``, then ``pulumi up`` again). docs/deployment.md walks through it."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.components.addons import AddonsArgs, ClusterAddons
from infra.components.bucket import BucketArgs, MinioBucketArgs, MinioModelBucket, S3ModelBucket
from infra.components.callback import CallbackArgs, CallbackEndpoint
from infra.components.cluster import Cluster, ClusterArgs
from infra.components.identity import ReplicaIdentity, ReplicaIdentityArgs
from infra.components.images import ImageRepository, ImageRepositoryArgs
from infra.components.karpenter import Karpenter, KarpenterArgs
from infra.components.network import Network, NetworkArgs
from infra.components.node_groups import NodeGroups, NodeGroupsArgs
from infra.components.ray_service import RAY_SERVICE, WXA_HOME, Images, WxassistService, WxassistServiceArgs
from infra.components.secrets import REDIS_PASSWORD_KEY, ServiceSecrets, ServiceSecretsArgs
from infra.components.state_store import RedisStateStore, StateStoreArgs
from infra.components.tracing import CollectorArgs, TracingCollector
from infra.config import Naming, StackConfig, StackSecrets, read_stack_config, read_stack_secrets

SERVICE_ACCOUNT = "wxassist"
# The namespace label that makes the load balancer controller gate a pod's readiness on its
# ALB target being healthy.
READINESS_GATE_LABEL = {"elbv2.k8s.aws/pod-readiness-gate-inject": "enabled"}


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
    after_nodes = pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=nodes.groups))
    # Helm waits for its pods: the charts go in once the system nodes can run them.
    karpenter = Karpenter("karpenter", KarpenterArgs(
        naming, config, cluster.name, cluster.endpoint, cluster.issuer, nodes.role, network.private_subnet_ids,
        cluster.security_group_id), opts=after_nodes)
    addons = ClusterAddons("addons", AddonsArgs(naming, config.charts, cluster.name, config.region, network.vpc_id,
                                                cluster.issuer, config.highly_available), opts=after_nodes)
    namespace = k8s.core.v1.Namespace(
        "namespace", metadata={"name": config.namespace, "labels": {**naming.labels, **READINESS_GATE_LABEL}},
        opts=pulumi.ResourceOptions(provider=cluster.provider))
    in_namespace = pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=[namespace]))

    images = ImageRepository("images", ImageRepositoryArgs(naming, config.image_digests), opts=on_aws)
    bucket_args = dict(naming=naming, noncurrent_version_days=config.noncurrent_version_days,
                       abort_multipart_days=config.abort_multipart_days)
    env: dict[str, pulumi.Input[str]] = {"WXA_MODEL": config.model}
    state = RedisStateStore("state", StateStoreArgs(
        naming, network.vpc_id, network.private_subnet_ids, cluster.security_group_id, config.redis_node_type,
        config.redis_replicas, snapshot_days=7 if config.highly_available else 1), opts=on_aws)
    generated: dict[str, dict[str, pulumi.Input[str]]] = {
        "state": {"WXA_STATE_URI": state.state_uri, REDIS_PASSWORD_KEY: state.auth_token}}
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
        generated["model-store"] = {"WXA_S3_ACCESS_KEY": bucket.reader_access_key,
                                    "WXA_S3_SECRET_KEY": bucket.reader_secret_key}

    service_secrets = ServiceSecrets("secrets", ServiceSecretsArgs(
        naming, config.namespace, config.region, cluster.issuer, generated),
        opts=pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(depends_on=[addons.external_secrets])))
    tracing = TracingCollector("tracing", CollectorArgs(
        naming, config.namespace, config.charts.otel_collector_image, config.otel_backend_endpoint,
        replicas=2 if config.highly_available else 1), opts=in_namespace)
    identity = ReplicaIdentity("replicas", ReplicaIdentityArgs(
        naming, cluster.issuer, config.namespace, SERVICE_ACCOUNT, bucket_arn), opts=in_namespace)
    callback = CallbackEndpoint("callback", CallbackArgs(
        naming, config.namespace, config.callback_domain, config.dns_zone, RAY_SERVICE, port_name="serve"),
        opts=pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(
            depends_on=[addons.load_balancer_controller])))

    # Real accounts only: every process refuses development credentials, the emulator or
    # MinIO's default keys (functions/common/settings.py, production_problems).
    env.update(WXA_ENVIRONMENT="production", WXA_HOME=WXA_HOME, WXA_TRACE_EXPORTER="otlp",
               OTEL_EXPORTER_OTLP_ENDPOINT=tracing.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
               WXA_WECHAT_APPID=config.wechat_appid, WXA_WECHAT_KIND=config.wechat_kind)
    if config.kb_uri:
        env["WXA_KB_URI"] = config.kb_uri

    outputs: dict[str, pulumi.Input] = {
        "cluster_name": cluster.name,
        "kubeconfig": cluster.kubeconfig,  # secret
        "image_repository": images.repository_url,
        "model_store": bucket.store_uri,
        "model_bucket": bucket.bucket_name,
        "wechat_secret": service_secrets.wechat_secret_name,
        # What the WeChat admin page asks for: the server URL, and the IP whitelist our
        # customer-service calls come from.
        "callback_url": callback.url,
        "egress_ips": network.egress_ips,
        "load_balancer": callback.hostname,
        "otlp_endpoint": tracing.endpoint,
    }
    if images.cpu_image is None or images.gpu_image is None:
        pulumi.log.warn("wxassist:image_digests is not set: the RayService waits for `make image` "
                        "(docs/deployment.md, step 3)")
        outputs["next_step"] = "make image STACK=<stack>, set wxassist:image_digests, pulumi up"
        return outputs

    service = WxassistService("wxassist", WxassistServiceArgs(
        naming, config, serve, ray.__version__, identity.service_account_name, env,
        Images(cpu=images.cpu_image, gpu=images.gpu_image), state.gcs_address),
        opts=pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(
            depends_on=[addons.kuberay, service_secrets.external_secret, *karpenter.node_pools])))
    outputs["ray_service"] = service.name
    return outputs


def program(naming: Naming) -> dict[str, pulumi.Input]:
    """What ``pulumi up`` runs (``__main__.py``) and what the tests run under mocks: the
    running stack's settings and secrets, read once, then the stack."""
    config = read_stack_config()
    return build_stack(config, read_stack_secrets(config), naming)

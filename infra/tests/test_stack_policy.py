"""Policy on what `pulumi up` would create, asserted on the program run under mocks: spot GPUs
from many instance types with on-demand standing in, Karpenter told of interruptions, no SSH
from the world, a private, versioned and encrypted model bucket, a replica role that can only
read it, the stack's own images, secrets only through Secrets Manager, a callback on the
stack's own name, and every resource tagged or labelled with its stack and project. Where a
test names what the program did before issue 22 (fixtures/legacy), the old rendering must
show the bug."""

from __future__ import annotations

import ipaddress
import json

import pytest
import yaml

from infra.instances import instance_table
from infra.serve_config import REPO_DIR, load_serve_config
from infra.tests.k8s_schemas import reveal
from infra.tests.stacks import TEST_DIGESTS, TEST_SECRETS, Recorded, StackRun, run_stack
from infra.tests.test_kubernetes_objects import legacy, legacy_ray_service, ray_service

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
NODE_TYPES = instance_table().sizes
SECRET_SIG = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")  # Pulumi's secret marker


def unsecret(value):
    """A secret input arrives wrapped in Pulumi's marker; the test reads through it."""
    if isinstance(value, dict) and value.get(SECRET_SIG[0]) == SECRET_SIG[1]:
        return value["value"]
    return value


# ---- nodes -------------------------------------------------------------------------------

NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"


def pools(run: StackRun) -> dict[str, dict]:
    return {p.inputs["metadata"]["name"]: p.inputs["spec"] for p in run.of_type(NODE_POOL)}


def requirement(pool: dict, key: str) -> list[str]:
    return next(r["values"] for r in pool["template"]["spec"]["requirements"] if r["key"] == key)


def legacy_resources(stack: str, type_: str) -> list[dict]:
    return [r["inputs"] for r in legacy(stack)["resources"] if r["type"] == type_]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_spot_gpus_come_from_many_instance_types(stack, request):
    spot = pools(request.getfixturevalue(stack))["gpu-spot"]
    assert requirement(spot, "karpenter.sh/capacity-type") == ["spot"]
    assert len(requirement(spot, "node.kubernetes.io/instance-type")) >= 4
    # Before: one managed node group per market, each with a single instance type.
    old = [g for g in legacy_resources(stack, NODE_GROUP) if g["labels"]["wxassist/pool"] == "gpu"]
    assert all(len(g["instanceTypes"]) == 1 for g in old)


def test_on_demand_stands_in_when_spot_is_gone(dev, prod):
    for run, base, spot_max in ((dev, 0, 2), (prod, 2, 6)):
        on_demand = pools(run)["gpu-on-demand"]
        assert requirement(on_demand, "karpenter.sh/capacity-type") == ["on-demand"]
        workers = {w["groupName"]: w for w in ray_service(run)["rayClusterConfig"]["workerGroupSpecs"]}
        assert (workers["gpu-on-demand"]["minReplicas"], workers["gpu-on-demand"]["maxReplicas"]) == \
            (base, base + spot_max)
        assert (workers["gpu-spot"]["minReplicas"], workers["gpu-spot"]["maxReplicas"]) == (0, spot_max)
        # Room for an upgrade's second cluster.
        assert on_demand["limits"]["nvidia.com/gpu"] == str(2 * (base + spot_max))


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_gpu_nodes_are_tainted_labelled_and_cache_on_nvme(stack, request):
    run = request.getfixturevalue(stack)
    for name in ("gpu-spot", "gpu-on-demand"):
        template = pools(run)[name]["template"]
        assert template["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]
        assert template["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"  # the device plugin's selector
        assert template["metadata"]["labels"]["ray.io/market-type"] == name.removeprefix("gpu-")
        assert template["spec"]["nodeClassRef"]["name"] == "gpu"
    gpu_class = next(c.inputs["spec"] for c in run.of_type("kubernetes:karpenter.k8s.aws/v1:EC2NodeClass")
                     if c.inputs["metadata"]["name"] == "gpu")
    assert gpu_class["instanceStorePolicy"] == "RAID0"


def test_karpenter_hears_of_interruptions_and_may_touch_only_its_cluster(prod):
    rules = {json.loads(r.inputs["eventPattern"])["detail-type"][0] for r in prod.of_type(
        "aws:cloudwatch/eventRule:EventRule")}
    assert {"EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation",
            "EC2 Instance State-change Notification", "AWS Health Event"} <= rules
    queue = prod.one("aws:sqs/queue:Queue")
    assert {t.inputs["arn"] for t in prod.of_type("aws:cloudwatch/eventTarget:EventTarget")} == {
        queue.inputs.get("arn", f"arn:aws:sqs:ap-southeast-1:123456789012:{queue.name}")}
    policy = json.loads(next(p for p in prod.of_type("aws:iam/rolePolicy:RolePolicy")
                             if p.name == "karpenter-controller").inputs["policy"])
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert by_sid["DeleteOwn"]["Condition"]["StringEquals"] == {
        "aws:ResourceTag/kubernetes.io/cluster/wxassist-prod": "owned"}
    assert by_sid["PassNodeRole"]["Resource"] == "arn:aws:iam::123456789012:role/nodes-node"
    release = next(r.inputs for r in prod.of_type("kubernetes:helm.sh/v3:Release") if r.name == "karpenter")
    assert release["values"]["settings"]["interruptionQueue"] == queue.name


def test_the_system_group_is_fixed_and_holds_the_head(prod):
    group = prod.one(NODE_GROUP).inputs
    assert group["scalingConfig"] == {"minSize": 2, "desiredSize": 2, "maxSize": 2}
    assert group["labels"]["wxassist/system"] == "true"
    head = ray_service(prod)["rayClusterConfig"]["headGroupSpec"]["template"]
    assert head["spec"]["nodeSelector"] == {"wxassist/system": "true"}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_nodes_may_be_reached_by_ssm_and_pull_from_ecr_only(stack, request):
    def policies(attachments):
        return {a["policyArn"].rsplit("/", 1)[1] for a in attachments}
    now = policies(r.inputs for r in request.getfixturevalue(stack).of_type(
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment"))
    assert {"AmazonSSMManagedInstanceCore", "AmazonEC2ContainerRegistryPullOnly"} <= now
    assert "AmazonSSMManagedInstanceCore" not in policies(
        legacy_resources(stack, "aws:iam/rolePolicyAttachment:RolePolicyAttachment"))


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_nodes_keep_pods_off_the_metadata_service_and_encrypt_their_disks(stack, request):
    run = request.getfixturevalue(stack)
    for group in run.of_type(NODE_GROUP):
        template = run.by_id(group.inputs["launchTemplate"]["id"]).inputs
        assert template["metadataOptions"] == {"httpEndpoint": "enabled", "httpTokens": "required",
                                               "httpPutResponseHopLimit": 1}
        assert template["blockDeviceMappings"][0]["ebs"]["encrypted"] == "true"
    for node_class in run.of_type("kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"):
        spec = node_class.inputs["spec"]
        assert spec["metadataOptions"]["httpTokens"] == "required"
        assert spec["metadataOptions"]["httpPutResponseHopLimit"] == 1
        assert spec["blockDeviceMappings"][0]["ebs"]["encrypted"] is True


def test_ray_worker_groups_are_labelled_where_their_pods_land(prod):
    workers = {w["groupName"]: w for w in ray_service(prod)["rayClusterConfig"]["workerGroupSpecs"]}
    assert set(workers) == {"cpu", "gpu-on-demand", "gpu-spot"}
    smallest = NODE_TYPES["g5.2xlarge"]  # the smallest of prod's GPU types
    for market in ("on-demand", "spot"):
        group = workers[f"gpu-{market}"]
        pod = group["template"]["spec"]
        assert group["labels"] == {"ray.io/market-type": market, "wxassist/pool": "gpu"}
        assert "labels" not in group["rayStartParams"]
        assert group["rayStartParams"] == {"num-cpus": str(smallest.vcpus - 1), "num-gpus": "1"}
        assert pod["nodeSelector"] == {"wxassist/pool": "gpu", "karpenter.sh/capacity-type": market}
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert workers["cpu"]["labels"] == {"ray.io/market-type": "on-demand", "wxassist/pool": "cpu"}


def test_worker_pods_drain_their_ray_node_before_they_go(dev, prod):
    """A spot notice (or a scale-down) gives a worker pod its grace period: the preStop hook
    drains the Ray node first, so generate's replicas move and their answers finish."""
    serve_graceful_s = max(load_serve_config("deploy/prod.yaml").graceful_shutdown_s.values())
    for run in (dev, prod):
        spec = ray_service(run)["rayClusterConfig"]
        for group in spec["workerGroupSpecs"]:
            pod = group["template"]["spec"]
            hook = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
            assert hook[:2] == ["wxassist", "drain-node"], group["groupName"]
            drain_s = float(hook[hook.index("--deadline-s") + 1])
            # Replicas finish inside the drain, and the drain inside the pod's grace period.
            assert serve_graceful_s < drain_s < pod["terminationGracePeriodSeconds"] <= 120
            # Ray, not Karpenter's consolidation, decides when a worker goes.
            assert group["template"]["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
        head = spec["headGroupSpec"]["template"]["spec"]
        assert head["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_gpu_workers_cache_the_model_on_the_node(stack, request):
    spec = ray_service(request.getfixturevalue(stack))["rayClusterConfig"]
    for group in spec["workerGroupSpecs"]:
        if not group["groupName"].startswith("gpu-"):
            continue
        pod = group["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "model-cache")
        assert volume["hostPath"]["path"].startswith("/mnt/k8s-disks/0/")  # the instance store's RAID0
        container = pod["containers"][0]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "model-cache")
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["WXA_MODEL_CACHE"] == mount["mountPath"] and env["WXA_GENERATE_ENGINE"] == "vllm"
    old = legacy_ray_service(stack)["rayClusterConfig"]["workerGroupSpecs"]
    assert all("volumes" not in g["template"]["spec"] for g in old)


# ---- network -----------------------------------------------------------------------------

WORLD = {"0.0.0.0/0", "::/0"}


def ssh_openings(run: StackRun) -> list[tuple[str, list[str]]]:
    """(security group, CIDRs) for every ingress rule that lets port 22 in."""
    found = []
    for group in run.of_type("aws:ec2/securityGroup:SecurityGroup"):
        for rule in group.inputs.get("ingress", []):
            protocol = str(rule.get("protocol"))
            if protocol in ("tcp", "6", "-1", "all") and rule.get("fromPort", 0) <= 22 <= rule.get("toPort", 65535):
                found.append((group.name, rule.get("cidrBlocks", []) + rule.get("ipv6CidrBlocks", [])))
    return found


def test_the_ssh_check_catches_a_rule_open_to_the_world():
    run = StackRun([Recorded("aws:ec2/securityGroup:SecurityGroup", "bad", {"ingress": [
        {"protocol": "tcp", "fromPort": 0, "toPort": 1024, "cidrBlocks": ["0.0.0.0/0"]}]}, "bad-id")])
    assert ssh_openings(run) == [("bad", ["0.0.0.0/0"])]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_no_ssh_at_all(stack, request):
    run = request.getfixturevalue(stack)
    assert ssh_openings(run) == []
    # A node group with an SSH key and no source security group would take port 22 from anywhere.
    assert all(group.inputs.get("remoteAccess") is None for group in run.of_type(NODE_GROUP))


def test_model_restores_reach_s3_without_nat(prod):
    endpoint = prod.one("aws:ec2/vpcEndpoint:VpcEndpoint").inputs
    assert endpoint["serviceName"] == "com.amazonaws.ap-southeast-1.s3" and endpoint["vpcEndpointType"] == "Gateway"
    private_tables = {r.id for r in prod.of_type("aws:ec2/routeTable:RouteTable") if "private" in r.name}
    assert set(endpoint["routeTableIds"]) == private_tables and len(private_tables) == 3


def test_nodes_redis_and_pods_live_in_private_subnets(prod):
    private = {r.id for r in prod.of_type("aws:ec2/subnet:Subnet") if "internal-elb" in json.dumps(r.inputs["tags"])}
    assert len(private) == 3
    for group in prod.of_type(NODE_GROUP):
        assert set(group.inputs["subnetIds"]) == private
    assert set(prod.one("aws:elasticache/subnetGroup:SubnetGroup").inputs["subnetIds"]) == private
    blocks = [ipaddress.ip_network(s.inputs["cidrBlock"]) for s in prod.of_type("aws:ec2/subnet:Subnet")]
    assert all(not a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1:])
    assert len(prod.of_type("aws:ec2/natGateway:NatGateway")) == 3  # one per zone in prod


def test_redis_needs_the_password_and_tls_and_the_cluster(dev, prod):
    for run in (dev, prod):
        group = run.one("aws:elasticache/replicationGroup:ReplicationGroup").inputs
        assert group["transitEncryptionEnabled"] and group["atRestEncryptionEnabled"]
        assert unsecret(group["authToken"])
        firewall = run.by_id(group["securityGroupIds"][0]).inputs
        assert firewall["ingress"] == [{"protocol": "tcp", "fromPort": 6379, "toPort": 6379,
                                        "securityGroups": ["sg-cluster"]}]
    assert prod.one("aws:elasticache/replicationGroup:ReplicationGroup").inputs["automaticFailoverEnabled"]


# ---- the model bucket --------------------------------------------------------------------

def test_the_s3_bucket_is_versioned_encrypted_private_and_cleaned(prod):
    bucket = prod.one("aws:s3/bucket:Bucket")
    def on_bucket(type_):
        found = prod.one(type_).inputs
        assert found["bucket"] == bucket.id
        return found
    assert on_bucket("aws:s3/bucketVersioning:BucketVersioning")["versioningConfiguration"]["status"] == "Enabled"
    sse = on_bucket("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"
    block = on_bucket("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert all(block[key] for key in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                      "restrictPublicBuckets"))
    assert on_bucket("aws:s3/bucketOwnershipControls:BucketOwnershipControls")["rule"]["objectOwnership"] == \
        "BucketOwnerEnforced"
    rules = {rule["id"]: rule for rule in on_bucket(
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")["rules"]}
    assert rules["abort-interrupted-pushes"]["abortIncompleteMultipartUpload"]["daysAfterInitiation"] == 2
    assert rules["expire-old-versions"]["noncurrentVersionExpiration"]["noncurrentDays"] == 90
    policy = json.loads(on_bucket("aws:s3/bucketPolicy:BucketPolicy")["policy"])
    assert policy["Statement"][0]["Effect"] == "Deny"
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_replica_role_can_only_read_the_model_bucket(prod):
    bucket_arn = f"arn:aws:s3:::{prod.one('aws:s3/bucket:Bucket').inputs['bucketPrefix']}test"
    roles = [r for r in prod.of_type("aws:iam/role:Role")
             if '"system:serviceaccount:wxassist:wxassist"' in r.inputs["assumeRolePolicy"]]
    assert len(roles) == 1
    role = roles[0]
    assert [a for a in prod.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
            if a.inputs["role"] in (role.id, role.name)] == []
    policies = [p for p in prod.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.id]
    assert len(policies) == 1
    for statement in json.loads(policies[0].inputs["policy"])["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all(action.startswith(("s3:Get", "s3:List")) for action in actions), actions
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert set(resources) <= {bucket_arn, f"{bucket_arn}/*"}
    account = next(a.inputs["metadata"] for a in prod.of_type("kubernetes:core/v1:ServiceAccount")
                   if a.name == "replicas")
    assert account["annotations"]["eks.amazonaws.com/role-arn"] == f"arn:aws:iam::123456789012:role/{role.name}"


def test_an_on_prem_stack_gets_the_same_bucket_on_minio(on_prem):
    assert on_prem.of_type("aws:s3/bucket:Bucket") == []
    bucket = on_prem.one("minio:index/s3Bucket:S3Bucket").inputs
    assert bucket["acl"] == "private"
    assert on_prem.one("minio:index/s3BucketVersioning:S3BucketVersioning").inputs[
        "versioningConfiguration"]["status"] == "Enabled"
    assert on_prem.one("minio:index/s3BucketServerSideEncryption:S3BucketServerSideEncryption").inputs[
        "kmsKeyId"] == "wxassist-models"
    assert on_prem.one("minio:index/ilmPolicy:IlmPolicy").inputs["rules"][0]["noncurrentVersionExpirationDays"] == 30
    policy = json.loads(on_prem.one("minio:index/iamPolicy:IamPolicy").inputs["policy"])
    name = "arn:aws:s3:::wxassist-dev-models-test"
    assert {r for s in policy["Statement"] for r in s["Resource"]} == {name, f"{name}/*"}
    assert all(a.startswith(("s3:Get", "s3:List")) for s in policy["Statement"] for a in s["Action"])
    env = {e["name"]: e["value"] for e in on_prem.one("kubernetes:ray.io/v1:RayService").inputs["spec"][
        "rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["WXA_MODEL_STORE"] == "minio://wxassist-dev-models-test/models"
    assert env["WXA_S3_ENDPOINT"] == "https://minio.corp.internal:9000"
    version = next(v for v in on_prem.of_type("aws:secretsmanager/secretVersion:SecretVersion")
                   if v.name == "secrets-model-store")
    assert set(json.loads(unsecret(version.inputs["secretString"]))) == {"WXA_S3_ACCESS_KEY", "WXA_S3_SECRET_KEY"}


# ---- the service -------------------------------------------------------------------------

@pytest.mark.parametrize(("stack", "deploy_file"), [("dev", "deploy/dev.yaml"), ("prod", "deploy/prod.yaml")])
def test_serve_config_v2_is_the_validated_deploy_file(stack, deploy_file, request):
    spec = request.getfixturevalue(stack).one("kubernetes:ray.io/v1:RayService").inputs["spec"]
    assert spec["serveConfigV2"] == (REPO_DIR / deploy_file).read_text(encoding="utf-8")


def ray_containers(spec: dict) -> list[dict]:
    cluster = spec["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]["spec"]["containers"][0]] + [
        w["template"]["spec"]["containers"][0] for w in cluster["workerGroupSpecs"]]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_pods_run_the_stacks_own_images_by_digest(stack, request):
    run = request.getfixturevalue(stack)
    repository = run.one("aws:ecr/repository:Repository").inputs
    assert repository["imageTagMutability"] == "IMMUTABLE" and repository["imageScanningConfiguration"]["scanOnPush"]
    url = f"123456789012.dkr.ecr.ap-southeast-1.amazonaws.com/wxassist-{stack}/wxassist"
    assert run.outputs["image_repository"] == url
    spec = ray_service(run)["rayClusterConfig"]
    images = {group: group_spec["template"]["spec"]["containers"][0]["image"] for group, group_spec in
              [("head", spec["headGroupSpec"])] + [(w["groupName"], w) for w in spec["workerGroupSpecs"]]}
    cpu, gpu = f"{url}@{TEST_DIGESTS['cpu']}", f"{url}@{TEST_DIGESTS['gpu']}"
    # A slim CPU image for the head and the CPU workers; CUDA and vLLM only where the GPUs are.
    assert images == {"head": cpu, "cpu": cpu, "gpu-on-demand": gpu, "gpu-spot": gpu}
    # Before: one placeholder registry for every pod.
    old = {c["image"] for c in ray_containers(legacy_ray_service(stack))}
    assert old == {"registry.example.com/wxassist:0.1.0"}


def test_the_first_pulumi_up_waits_for_the_images():
    run = run_stack("dev", images=False)
    assert run.of_type("kubernetes:ray.io/v1:RayService") == []
    assert run.one("aws:ecr/repository:Repository")
    assert run.outputs["next_step"].startswith("make image")


def test_the_pods_get_settings_as_env_and_secrets_only_through_external_secrets(prod):
    assert prod.of_type("kubernetes:core/v1:Secret") == []  # nothing from stack config into a Secret
    external = prod.one("kubernetes:external-secrets.io/v1:ExternalSecret").inputs["spec"]
    assert external["target"] == {"name": "wxassist-env", "creationPolicy": "Owner"}
    names = {s.inputs["name"] for s in prod.of_type("aws:secretsmanager/secret:Secret")}
    assert {e["extract"]["key"] for e in external["dataFrom"]} == names == {"wxassist-prod/wechat",
                                                                            "wxassist-prod/state"}
    # The WeChat secret has no value from the stack: the operator writes it.
    versions = prod.of_type("aws:secretsmanager/secretVersion:SecretVersion")
    assert [v.name for v in versions] == ["secrets-state"]
    state = json.loads(unsecret(versions[0].inputs["secretString"]))
    assert state["WXA_STATE_URI"].startswith("rediss://:") and state["REDIS_PASSWORD"]
    # ExternalSecrets reads these secrets and nothing else.
    reader = json.loads(next(p for p in prod.of_type("aws:iam/rolePolicy:RolePolicy")
                             if p.name == "secrets-reader").inputs["policy"])
    assert reader["Statement"][0]["Action"] == ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    assert len(reader["Statement"][0]["Resource"]) == 2
    for container in ray_containers(ray_service(prod)):
        assert container["envFrom"] == [{"secretRef": {"name": "wxassist-env"}}]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["WXA_MODEL"] == "deepseek-r1-distill-qwen-7b@1" and env["WXA_ENVIRONMENT"] == "production"
        assert env["WXA_MODEL_STORE"] == "s3://wxassist-prod-models-test/models"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.wxassist.svc:4318"
        assert not {"WXA_WECHAT_TOKEN", "WXA_STATE_URI"} & set(env)
    # Before: the WeChat keys were stack config copied into a Kubernetes Secret.
    assert "WXA_WECHAT_TOKEN" in legacy_resources("prod", "kubernetes:core/v1:Secret")[0]["stringData"]


def test_the_minio_password_reaches_the_provider_and_nothing_else(on_prem):
    for resource in on_prem.resources:
        if resource.type == "pulumi:providers:minio":
            continue
        assert TEST_SECRETS["minio_password"] not in json.dumps(resource.inputs), resource.name


def test_gcs_fault_tolerance_uses_the_stacks_redis(prod):
    options = ray_service(prod)["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert options["redisAddress"] == "rediss://master.state.cache.amazonaws.com:6379"
    assert options["redisPassword"] == {"valueFrom": {"secretKeyRef": {"name": "wxassist-env", "key": "REDIS_PASSWORD"}}}


def test_the_collector_exports_to_the_configured_backend(dev, prod):
    def exporters(run):
        config = yaml.safe_load(run.one("kubernetes:core/v1:ConfigMap").inputs["data"]["config.yaml"])
        return config["service"]["pipelines"]["traces"]["exporters"], config["exporters"]
    assert exporters(prod) == (["otlphttp"], {"otlphttp": {"endpoint": "https://otlp.example.com"}})
    assert exporters(dev)[0] == ["debug"]


# ---- the callback ------------------------------------------------------------------------

def test_wechat_calls_https_on_the_stacks_own_name_with_its_own_certificate(prod):
    assert prod.outputs["callback_url"] == "https://wx.example.com/wechat/default"
    certificate = prod.one("aws:acm/certificate:Certificate").inputs
    assert certificate == {**certificate, "domainName": "wx.example.com", "validationMethod": "DNS"}
    records = {r.inputs["name"]: r.inputs for r in prod.of_type("aws:route53/record:Record")}
    assert records["wx.example.com"]["records"] == ["k8s-wx-test.elb.amazonaws.com"]
    assert records["wx.example.com"]["zoneId"] == "Z0TESTZONE"
    assert prod.outputs["load_balancer"] == "k8s-wx-test.elb.amazonaws.com"
    # Before: plain http to the load balancer's own name, which no certificate matches.
    assert legacy("prod")["outputs"]["callback_url"] == "http://wx-test.elb.amazonaws.com/wechat/default"


def test_the_alb_follows_kuberays_serve_service_and_only_wechat_is_public(prod):
    ingress = prod.one("kubernetes:networking.k8s.io/v1:Ingress").inputs
    annotations = ingress["metadata"]["annotations"]
    assert annotations["alb.ingress.kubernetes.io/target-type"] == "ip"
    assert annotations["alb.ingress.kubernetes.io/listen-ports"] == '[{"HTTPS": 443}]'
    assert annotations["alb.ingress.kubernetes.io/healthcheck-path"] == "/-/healthz"
    assert annotations["alb.ingress.kubernetes.io/certificate-arn"].startswith("arn:aws:acm:")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "wx.example.com"
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/wechat", "Prefix")
    # KubeRay's serve Service selects the active cluster only, and moves on an upgrade.
    assert path["backend"]["service"] == {"name": "wxassist-serve-svc", "port": {"name": "serve"}}
    spec = ray_service(prod)
    assert spec["upgradeStrategy"] == {"type": "NewCluster"} and spec["excludeHeadPodFromServeSvc"] is True
    # Before: our own LoadBalancer Service selecting every cluster's serving pods.
    (old,) = [s for s in legacy_resources("prod", "kubernetes:core/v1:Service")
              if s["metadata"]["name"] == "wxassist-callbacks"]
    assert "ray.io/cluster" not in old["spec"]["selector"]


def test_the_egress_ips_to_whitelist_are_the_nat_addresses(dev, prod):
    assert dev.outputs["egress_ips"] == ["203.0.113.10"]
    assert prod.outputs["egress_ips"] == ["203.0.113.10", "203.0.113.11", "203.0.113.12"]
    assert "egress_ips" not in legacy("prod")["outputs"]


def test_chart_versions_are_the_ones_the_tests_check_against(prod):
    charts = {r.inputs["chart"]: r.inputs["version"] for r in prod.of_type("kubernetes:helm.sh/v3:Release")}
    assert charts["kuberay-operator"] == "1.7.0"  # the CRD in fixtures/kuberay-v1.7.0
    old = {r["chart"]: r["version"] for r in legacy_resources("prod", "kubernetes:helm.sh/v3:Release")}
    assert old["kuberay-operator"] == "1.4.2"  # before labels, autoscaler v2's version field
    assert "cluster-autoscaler" not in charts and "oci://public.ecr.aws/karpenter/karpenter" in charts


# ---- tags --------------------------------------------------------------------------------

# Settings of a tagged parent, with no tags of their own in AWS.
UNTAGGABLE = {
    "aws:ec2/routeTableAssociation:RouteTableAssociation", "aws:iam/rolePolicy:RolePolicy",
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment", "aws:s3/bucketVersioning:BucketVersioning",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "aws:s3/bucketPolicy:BucketPolicy",
    # MinIO buckets and their settings carry no tags; its user does.
    "minio:index/s3Bucket:S3Bucket", "minio:index/s3BucketVersioning:S3BucketVersioning",
    "minio:index/s3BucketServerSideEncryption:S3BucketServerSideEncryption", "minio:index/ilmPolicy:IlmPolicy",
    "minio:index/iamPolicy:IamPolicy", "minio:index/iamUserPolicyAttachment:IamUserPolicyAttachment",
    # Helm releases label what they install their own way; a random value is not a cloud resource.
    "kubernetes:helm.sh/v3:Release", "random:index/randomPassword:RandomPassword",
    # Settings of a tagged resource, or records in a tagged zone.
    "aws:ecr/lifecyclePolicy:LifecyclePolicy", "aws:sqs/queuePolicy:QueuePolicy",
    "aws:cloudwatch/eventTarget:EventTarget", "aws:route53/record:Record",
    "aws:acm/certificateValidation:CertificateValidation", "aws:secretsmanager/secretVersion:SecretVersion",
}


@pytest.mark.parametrize("stack", ["dev", "prod", "on_prem"])
def test_every_resource_is_tagged_with_stack_and_project(stack, request):
    run = request.getfixturevalue(stack)
    expected_stack = "dev" if stack == "on_prem" else stack
    checked = 0
    for resource in run.resources:
        if resource.type.startswith(("wxassist:", "pulumi:providers:")) or resource.type in UNTAGGABLE:
            continue
        if resource.type.startswith("kubernetes:"):
            labels = resource.inputs["metadata"]["labels"]  # namespaced or not (NodePools too)
            assert (labels["app.kubernetes.io/part-of"], labels["wxassist/stack"]) == ("wxassist", expected_stack), \
                resource.name
        else:
            tags = resource.inputs.get("tags") or {}
            assert (tags.get("project"), tags.get("stack")) == ("wxassist", expected_stack), resource.name
        checked += 1
    assert checked > 25
    # Anything AWS adds on its own (ENIs, volumes, the ASGs behind node groups) gets them too.
    provider = run.one("pulumi:providers:aws").inputs
    assert json.loads(provider["defaultTags"])["tags"] == {"project": "wxassist", "stack": expected_stack,
                                                           "managed-by": "pulumi"}

"""Policy on what `pulumi up` would create, asserted on the program run under mocks: spot and
on-demand GPUs where each stack wants them, no SSH from the world, a private, versioned and
encrypted model bucket, a replica role that can only read it, the Serve config from deploy/,
secrets kept secret, and every resource tagged or labelled with its stack and project."""

from __future__ import annotations

import ipaddress
import json

import pytest
import yaml

from infra.instances import NODE_TYPES
from infra.serve_config import REPO_DIR, load_serve_config
from infra.tests.stacks import TEST_SECRETS, Recorded, StackRun, run_stack

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
SECRET_SIG = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")  # Pulumi's secret marker


def gpu_groups(run: StackRun) -> list[Recorded]:
    groups = [r for r in run.of_type(NODE_GROUP) if r.inputs["labels"]["wxassist/pool"] == "gpu"]
    assert groups, "the stack declared no GPU node group"
    return groups


def unsecret(value):
    """A secret input arrives wrapped in Pulumi's marker; the test reads through it."""
    if isinstance(value, dict) and value.get(SECRET_SIG[0]) == SECRET_SIG[1]:
        return value["value"]
    return value


# ---- GPU capacity ------------------------------------------------------------------------

def test_dev_gpu_nodes_are_spot_and_scale_to_zero(dev):
    groups = gpu_groups(dev)
    assert [g.inputs["capacityType"] for g in groups] == ["SPOT"]
    scaling = groups[0].inputs["scalingConfig"]
    assert scaling["minSize"] == 0 and scaling["desiredSize"] == 0 and scaling["maxSize"] == 2
    assert groups[0].inputs["labels"]["ray.io/market-type"] == "spot"


def test_prod_has_an_on_demand_base_and_spot_overflow(prod):
    by_market = {g.inputs["labels"]["ray.io/market-type"]: g for g in gpu_groups(prod)}
    on_demand, spot = by_market["on-demand"].inputs, by_market["spot"].inputs
    assert on_demand["capacityType"] == "ON_DEMAND" and spot["capacityType"] == "SPOT"
    # The base cannot be scaled away (min is the base; Ray's worker group holds it at 2, the
    # node group has room for an upgrade's second cluster); spot starts from zero.
    assert on_demand["scalingConfig"] == {"minSize": 2, "desiredSize": 2, "maxSize": 4}
    assert spot["scalingConfig"]["minSize"] == 0 and spot["scalingConfig"]["maxSize"] == 6


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_gpu_nodes_are_tainted_and_run_the_nvidia_image(stack, request):
    for group in gpu_groups(request.getfixturevalue(stack)):
        assert group.inputs["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
        assert group.inputs["amiType"].endswith("_NVIDIA")
        # NVIDIA's device plugin chart schedules only where this label says there is a GPU.
        assert group.inputs["labels"]["nvidia.com/gpu.present"] == "true"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_nodes_keep_pods_off_the_metadata_service_and_encrypt_their_disks(stack, request):
    run = request.getfixturevalue(stack)
    for group in run.of_type(NODE_GROUP):
        template = run.by_id(group.inputs["launchTemplate"]["id"]).inputs
        assert template["metadataOptions"] == {"httpEndpoint": "enabled", "httpTokens": "required",
                                               "httpPutResponseHopLimit": 1}
        assert template["blockDeviceMappings"][0]["ebs"]["encrypted"] == "true"


def test_the_cluster_autoscaler_may_resize_only_its_own_cluster(prod):
    policy = json.loads(next(p for p in prod.of_type("aws:iam/rolePolicy:RolePolicy")
                             if p.name == "addons-autoscaler").inputs["policy"])
    writes = [s for s in policy["Statement"] if "autoscaling:SetDesiredCapacity" in s["Action"]]
    assert writes[0]["Condition"] == {
        "StringEquals": {"aws:ResourceTag/k8s.io/cluster-autoscaler/wxassist-prod": "owned"}}


def test_ray_worker_groups_mirror_the_gpu_node_groups(prod):
    spec = prod.one("kubernetes:ray.io/v1:RayService").inputs["spec"]
    workers = {w["groupName"]: w for w in spec["rayClusterConfig"]["workerGroupSpecs"]}
    assert set(workers) == {"cpu", "gpu-on-demand", "gpu-spot"}
    assert (workers["gpu-on-demand"]["minReplicas"], workers["gpu-on-demand"]["maxReplicas"]) == (2, 2)
    assert (workers["gpu-spot"]["minReplicas"], workers["gpu-spot"]["maxReplicas"]) == (0, 6)
    for name in ("gpu-on-demand", "gpu-spot"):
        pod = workers[name]["template"]["spec"]
        assert pod["nodeSelector"]["ray.io/market-type"] == name.removeprefix("gpu-")
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        market = name.removeprefix("gpu-")
        # g5.2xlarge less one vCPU; labels the deploy file's label_selector / fallback_strategy use.
        assert workers[name]["rayStartParams"] == {
            "num-cpus": str(NODE_TYPES["g5.2xlarge"].vcpus - 1), "num-gpus": "1", "labels": f"ray.io/market-type={market},wxassist/pool=gpu"}
    assert workers["cpu"]["rayStartParams"]["labels"] == "ray.io/market-type=on-demand,wxassist/pool=cpu"



def test_worker_pods_drain_their_ray_node_before_they_go(dev, prod):
    """A spot notice (or a scale-down) gives a worker pod its grace period: the preStop hook
    drains the Ray node first, so generate's replicas move and their answers finish."""
    serve_graceful_s = max(load_serve_config("deploy/prod.yaml").graceful_shutdown_s.values())
    for run in (dev, prod):
        spec = run.one("kubernetes:ray.io/v1:RayService").inputs["spec"]["rayClusterConfig"]
        for group in spec["workerGroupSpecs"]:
            pod = group["template"]["spec"]
            hook = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
            assert hook[:2] == ["wxassist", "drain-node"], group["groupName"]
            drain_s = float(hook[hook.index("--deadline-s") + 1])
            # Replicas finish inside the drain, and the drain inside the pod's grace period.
            assert serve_graceful_s < drain_s < pod["terminationGracePeriodSeconds"] <= 120
        head = spec["headGroupSpec"]["template"]["spec"]
        assert head["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"

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
             if "system:serviceaccount:wxassist:wxassist" in r.inputs["assumeRolePolicy"]]
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
    account = prod.one("kubernetes:core/v1:ServiceAccount").inputs["metadata"]
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
    secret_keys = set(unsecret(on_prem.one("kubernetes:core/v1:Secret").inputs["stringData"]))
    assert {"WXA_S3_ACCESS_KEY", "WXA_S3_SECRET_KEY"} <= secret_keys


# ---- the service -------------------------------------------------------------------------

@pytest.mark.parametrize(("stack", "deploy_file"), [("dev", "deploy/dev.yaml"), ("prod", "deploy/prod.yaml")])
def test_serve_config_v2_is_the_validated_deploy_file(stack, deploy_file, request):
    spec = request.getfixturevalue(stack).one("kubernetes:ray.io/v1:RayService").inputs["spec"]
    assert spec["serveConfigV2"] == (REPO_DIR / deploy_file).read_text(encoding="utf-8")


def test_the_pods_get_settings_as_env_and_secrets_only_through_the_secret(prod):
    secret = prod.one("kubernetes:core/v1:Secret").inputs["stringData"]
    assert secret.get(SECRET_SIG[0]) == SECRET_SIG[1], "the Secret's data must stay a Pulumi secret"
    data = unsecret(secret)
    assert data["WXA_WECHAT_TOKEN"] == TEST_SECRETS["wechat_token"]
    assert data["WXA_STATE_URI"].startswith("rediss://:")
    spec = prod.one("kubernetes:ray.io/v1:RayService").inputs["spec"]
    containers = [spec["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]] + [
        w["template"]["spec"]["containers"][0] for w in spec["rayClusterConfig"]["workerGroupSpecs"]]
    for container in containers:
        assert container["envFrom"] == [{"secretRef": {"name": "wxassist-env"}}]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["WXA_MODEL"] == "deepseek-r1-distill-qwen-7b@1" and env["WXA_ENVIRONMENT"] == "production"
        assert env["WXA_MODEL_STORE"] == "s3://wxassist-prod-models-test/models"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.wxassist.svc:4318"
    # No secret value anywhere else: not in the RayService, a ConfigMap or a tag.
    for resource in prod.resources:
        if resource.type == "kubernetes:core/v1:Secret":
            continue
        text = json.dumps(resource.inputs)
        assert not any(value in text for value in TEST_SECRETS.values()), resource.name


def test_the_collector_exports_to_the_configured_backend(dev, prod):
    def exporters(run):
        config = yaml.safe_load(run.one("kubernetes:core/v1:ConfigMap").inputs["data"]["config.yaml"])
        return config["service"]["pipelines"]["traces"]["exporters"], config["exporters"]
    assert exporters(prod) == (["otlphttp"], {"otlphttp": {"endpoint": "https://otlp.example.com"}})
    assert exporters(dev)[0] == ["debug"]


def callbacks(run: StackRun) -> dict:
    return next(s.inputs for s in run.of_type("kubernetes:core/v1:Service")
                if s.inputs["metadata"]["name"] == "wxassist-callbacks")


def test_wechat_reaches_the_proxies_on_80_or_on_443_with_a_certificate(dev):
    service = callbacks(dev)
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["selector"] == {"ray.io/serve": "true", "wxassist/stack": "dev"}
    assert service["spec"]["ports"] == [{"name": "wechat", "port": 80, "targetPort": 8000}]
    assert dev.outputs["callback_url"] == "http://wx-test.elb.amazonaws.com/wechat/default"
    run = run_stack("dev", {"wxassist:tls_certificate_arn": "arn:aws:acm:ap-southeast-1:123456789012:certificate/x"})
    service = callbacks(run)
    assert service["spec"]["ports"][0]["port"] == 443
    assert service["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-ssl-cert"].endswith("/x")
    assert run.outputs["callback_url"].startswith("https://")


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
            labels = resource.inputs["metadata"]["labels"]
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

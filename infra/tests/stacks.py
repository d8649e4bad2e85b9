"""Run the Pulumi program under ``pulumi.runtime.Mocks``: no cloud, no Pulumi CLI. Every
resource the program declares is recorded with its inputs (wire names, camelCase), so tests
can assert policy on what ``pulumi up`` would ask the providers for."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import pulumi

from infra.config import NAMESPACE, Naming, stack_file_config
from infra.stack import program

ACCOUNT_ID = "123456789012"
# A recognisable test secret: it must reach the MinIO provider and nothing else.
TEST_SECRETS = {"minio_password": "minio-SECRET-55e0"}
# What `make image` would have printed: a stack with these runs the RayService.
TEST_DIGESTS = {"cpu": "sha256:" + "c" * 64, "gpu": "sha256:" + "9" * 64}


def aws_id(prefix: str, name: str) -> str:
    """An id shaped like AWS's (``subnet-0a1b…``): CRD schemas check the shape."""
    return f"{prefix}-0{hashlib.sha256(name.encode()).hexdigest()[:16]}"


@dataclass
class Recorded:
    type: str
    name: str
    inputs: dict
    id: str


@dataclass
class StackRun:
    resources: list[Recorded] = field(default_factory=list)
    outputs: dict = field(default_factory=dict)

    def of_type(self, type_: str) -> list[Recorded]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str) -> Recorded:
        found = self.of_type(type_)
        assert len(found) == 1, f"expected one {type_}, found {[r.name for r in found]}"
        return found[0]

    def by_id(self, id_: str) -> Recorded:
        return next(r for r in self.resources if r.id == id_)


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers as the providers would with the outputs the program reads back."""

    def __init__(self, run: StackRun, region: str):
        self.run, self.region = run, region

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        state = dict(args.inputs)
        resource_id = f"{args.name}-id"
        if args.typ == "aws:ec2/subnet:Subnet":
            resource_id = aws_id("subnet", args.name)
        elif args.typ == "aws:ec2/securityGroup:SecurityGroup":
            resource_id = aws_id("sg", args.name)
        service = args.typ.split(":")[1].split("/")[0] if args.typ.startswith("aws:") else ""
        state.setdefault("arn", f"arn:aws:{service}:{self.region}:{ACCOUNT_ID}:{args.name}")
        if args.typ == "aws:s3/bucket:Bucket":
            state["bucket"] = state.get("bucket") or f"{state.get('bucketPrefix', '')}test"
            state["arn"] = f"arn:aws:s3:::{state['bucket']}"
        elif args.typ == "aws:iam/role:Role":
            state["name"] = args.name
            state["arn"] = f"arn:aws:iam::{ACCOUNT_ID}:role/{args.name}"
        elif args.typ == "aws:eks/cluster:Cluster":
            state.update(endpoint="https://test.eks.example", certificateAuthority={"data": "Q0E="},
                         identities=[{"oidcs": [{"issuer": f"https://oidc.eks.{self.region}.amazonaws.com/id/T"}]}],
                         vpcConfig={**state.get("vpcConfig", {}), "clusterSecurityGroupId": "sg-cluster"})
        elif args.typ == "aws:eks/nodeGroup:NodeGroup":
            state["nodeGroupName"] = args.name
        elif args.typ == "aws:elasticache/replicationGroup:ReplicationGroup":
            state["primaryEndpointAddress"] = f"master.{args.name}.cache.amazonaws.com"
        elif args.typ == "random:index/randomPassword:RandomPassword":
            state["result"] = "r" * int(state.get("length", 16))
        elif args.typ == "kubernetes:networking.k8s.io/v1:Ingress":
            state["status"] = {"loadBalancer": {"ingress": [{"hostname": "k8s-wx-test.elb.amazonaws.com"}]}}
        elif args.typ == "aws:ec2/eip:Eip":
            state["publicIp"] = f"203.0.113.{10 + len(self.run.of_type(args.typ))}"
        elif args.typ == "aws:acm/certificate:Certificate":
            state["domainValidationOptions"] = [{
                "domainName": state["domainName"], "resourceRecordName": f"_x.{state['domainName']}.",
                "resourceRecordType": "CNAME", "resourceRecordValue": "_y.acm-validations.aws."}]
        elif args.typ == "aws:acm/certificateValidation:CertificateValidation":
            state["certificateArn"] = state["certificateArn"]
        elif args.typ == "aws:route53/record:Record":
            state["fqdn"] = state["name"]
        elif args.typ == "aws:ecr/repository:Repository":
            state["repositoryUrl"] = f"{ACCOUNT_ID}.dkr.ecr.{self.region}.amazonaws.com/{state['name']}"
        elif args.typ == "aws:sqs/queue:Queue":
            state.update(name=args.name, url=f"https://sqs.{self.region}.amazonaws.com/{ACCOUNT_ID}/{args.name}")
        elif args.typ == "minio:index/s3Bucket:S3Bucket":
            state["bucket"] = state.get("bucket") or f"{state.get('bucketPrefix', '')}test"
        self.run.resources.append(Recorded(args.typ, args.name, dict(args.inputs), resource_id))
        return resource_id, state

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {"names": [f"{self.region}{zone}" for zone in "abc"], "zoneIds": ["z1", "z2", "z3"]}
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT_ID, "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/test", "userId": "T"}
        if args.token == "aws:route53/getZone:getZone":
            return {"zoneId": "Z0TESTZONE", "name": args.args["name"]}
        raise AssertionError(f"the program made an unexpected call: {args.token}")


def run_stack(stack: str, overrides: dict | None = None, *, images: bool = True) -> StackRun:
    """The program for Pulumi.<stack>.yaml (plus ``overrides``, ``{"wxassist:key": value}``),
    with TEST_SECRETS as its secrets; ``images``: as after `make image` (TEST_DIGESTS set),
    else as on the first `pulumi up`."""
    config = stack_file_config(stack)
    if images:
        config[f"{NAMESPACE}:image_digests"] = json.dumps(TEST_DIGESTS)
    for key, value in (overrides or {}).items():
        config[key] = value if isinstance(value, str) else json.dumps(value)
    config.update({f"{NAMESPACE}:{key}": value for key, value in TEST_SECRETS.items()})
    run = StackRun()
    pulumi.runtime.set_mocks(RecordingMocks(run, config.get(f"{NAMESPACE}:region", "ap-southeast-1")),
                             project="wxassist", stack=stack, preview=False)
    pulumi.runtime.set_all_config(config, [f"{NAMESPACE}:{key}" for key in TEST_SECRETS])

    @pulumi.runtime.test
    def under_mocks():
        return pulumi.Output.all(**program(Naming("wxassist", stack))).apply(run.outputs.update)

    under_mocks()
    return run

"""The model bucket `wxassist model push` backs weights up to and generate replicas restore
from: versioned (a bad push is rolled back by version), encrypted, private, and cleaned of
what an interrupted push or an old version leaves behind."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_minio as minio
import pulumi_random as random

from infra.config import MinioStore, Naming

MODEL_PREFIX = "models"  # the store URI's prefix inside the bucket


@dataclass(frozen=True)
class BucketArgs:
    naming: Naming
    noncurrent_version_days: int
    abort_multipart_days: int


class S3ModelBucket(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    store_uri: pulumi.Output[str]  # WXA_MODEL_STORE

    def __init__(self, name: str, args: BucketArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("wxassist:infra:S3ModelBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(name, bucket_prefix=f"{args.naming.prefix}-models-", tags=args.naming.tags, opts=child)
        aws.s3.BucketOwnershipControls(name, bucket=bucket.id, rule={"object_ownership": "BucketOwnerEnforced"},
                                       opts=child)  # no ACLs: access is by policy only
        aws.s3.BucketPublicAccessBlock(name, bucket=bucket.id, block_public_acls=True, block_public_policy=True,
                                       ignore_public_acls=True, restrict_public_buckets=True, opts=child)
        versioning = aws.s3.BucketVersioning(name, bucket=bucket.id,
                                             versioning_configuration={"status": "Enabled"}, opts=child)
        aws.s3.BucketServerSideEncryptionConfiguration(name, bucket=bucket.id, opts=child, rules=[{
            "apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms"},
            "bucket_key_enabled": True}])
        aws.s3.BucketLifecycleConfiguration(
            name, bucket=bucket.id, opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]), rules=[
                {"id": "abort-interrupted-pushes", "status": "Enabled", "filter": {},
                 "abort_incomplete_multipart_upload": {"days_after_initiation": args.abort_multipart_days}},
                {"id": "expire-old-versions", "status": "Enabled", "filter": {},
                 "noncurrent_version_expiration": {"noncurrent_days": args.noncurrent_version_days}},
            ])
        aws.s3.BucketPolicy(name, bucket=bucket.id, opts=child, policy=bucket.arn.apply(lambda arn: json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]})))
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.store_uri = bucket.bucket.apply(lambda bucket_name: f"s3://{bucket_name}/{MODEL_PREFIX}")
        self.register_outputs({"bucket_name": self.bucket_name, "store_uri": self.store_uri})


def minio_read_policy(bucket_name: str) -> str:
    arn = f"arn:aws:s3:::{bucket_name}"
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": [arn]},
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion"], "Resource": [f"{arn}/*"]},
    ]})


@dataclass(frozen=True)
class MinioBucketArgs(BucketArgs):
    store: MinioStore
    admin_password: pulumi.Output[str]


class MinioModelBucket(pulumi.ComponentResource):
    """The same bucket on an on-prem MinIO. MinIO clears stale multipart uploads itself
    (``api.stale_uploads_expiry``, 24 h by default), so only old versions need a rule."""

    bucket_name: pulumi.Output[str]
    store_uri: pulumi.Output[str]
    endpoint_url: str
    reader_access_key: pulumi.Output[str]
    reader_secret_key: pulumi.Output[str]

    def __init__(self, name: str, args: MinioBucketArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("wxassist:infra:MinioModelBucket", name, None, opts)
        provider = minio.Provider(f"{name}-minio", minio_server=args.store.endpoint, minio_ssl=args.store.ssl,
                                  minio_user=args.store.admin_user, minio_password=args.admin_password,
                                  opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        bucket = minio.S3Bucket(name, bucket_prefix=f"{args.naming.prefix}-models-", acl="private", opts=child)
        minio.S3BucketVersioning(name, bucket=bucket.bucket, versioning_configuration={"status": "Enabled"}, opts=child)
        minio.S3BucketServerSideEncryption(name, bucket=bucket.bucket, encryption_type="aws:kms",
                                           kms_key_id=args.store.kms_key, opts=child)
        minio.IlmPolicy(name, bucket=bucket.bucket, opts=child, rules=[{
            "id": "expire-old-versions", "status": "Enabled",
            "noncurrent_version_expiration_days": args.noncurrent_version_days}])
        # Replicas read with a user of their own whose policy names this bucket only.
        secret = random.RandomPassword(f"{name}-reader", length=40, special=False,
                                       opts=pulumi.ResourceOptions(parent=self))
        reader = minio.IamUser(f"{name}-reader", name=f"{args.naming.prefix}-model-reader", secret=secret.result,
                               tags=args.naming.tags, opts=child)
        policy = minio.IamPolicy(f"{name}-read", name=f"{args.naming.prefix}-model-read",
                                 policy=bucket.bucket.apply(minio_read_policy), opts=child)
        minio.IamUserPolicyAttachment(f"{name}-reader", user_name=reader.name, policy_name=policy.name, opts=child)

        scheme = "https" if args.store.ssl else "http"
        self.endpoint_url = f"{scheme}://{args.store.endpoint}"
        self.bucket_name = bucket.bucket
        self.store_uri = bucket.bucket.apply(lambda bucket_name: f"minio://{bucket_name}/{MODEL_PREFIX}")
        self.reader_access_key = reader.name
        self.reader_secret_key = pulumi.Output.secret(secret.result)
        self.register_outputs({"bucket_name": self.bucket_name, "store_uri": self.store_uri})

"""The stack's container registry: one ECR repository the two wxassist images are pushed to
(`make image`, deploy/Dockerfile's ``cpu`` and ``gpu`` targets) and the RayService pulls from
by digest. Tags are immutable, so a tag always names the same image; pushes are scanned; old
images expire so the repository does not grow without end."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config import ImageDigests, Naming

KEEP_IMAGES = 30  # both flavours of the last ~15 builds: enough to roll back by digest


def image_ref(repository_url: str, digest: str) -> str:
    return f"{repository_url}@{digest}"


@dataclass(frozen=True)
class ImageRepositoryArgs:
    naming: Naming
    digests: ImageDigests | None


class ImageRepository(pulumi.ComponentResource):
    repository_url: pulumi.Output[str]
    cpu_image: pulumi.Output[str] | None  # None until `make image` has pushed and the digests are set
    gpu_image: pulumi.Output[str] | None

    def __init__(self, name: str, args: ImageRepositoryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("wxassist:infra:ImageRepository", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        repository = aws.ecr.Repository(
            name, name=f"{args.naming.prefix}/wxassist", image_tag_mutability="IMMUTABLE",
            image_scanning_configuration={"scan_on_push": True},
            encryption_configurations=[{"encryption_type": "KMS"}], tags=args.naming.tags, opts=child)
        aws.ecr.LifecyclePolicy(name, repository=repository.name, opts=child, policy=json.dumps({"rules": [{
            "rulePriority": 1, "description": f"keep the newest {KEEP_IMAGES} images",
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": KEEP_IMAGES},
            "action": {"type": "expire"}}]}))
        self.repository_url = repository.repository_url
        self.cpu_image = self.gpu_image = None
        if args.digests is not None:
            digests = args.digests
            self.cpu_image = repository.repository_url.apply(lambda url: image_ref(url, digests.cpu))
            self.gpu_image = repository.repository_url.apply(lambda url: image_ref(url, digests.gpu))
        self.register_outputs({"repository_url": self.repository_url})

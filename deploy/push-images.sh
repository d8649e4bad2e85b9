#!/usr/bin/env bash
# `make image`: build deploy/Dockerfile's cpu and gpu images, push them to the stack's ECR
# repository (the stack output image_repository), and print the digests to pin in the stack.
# Needs docker (with buildx), the AWS CLI and pulumi, logged in to the stack's account.
set -euo pipefail
stack="${1:?usage: push-images.sh STACK [TAG]}"
# Tags are immutable in the repository: one tag per commit, never a moving one.
tag="${2:-$(git rev-parse --short=12 HEAD)}"
if [ -n "$(git status --porcelain -- pyproject.toml constraints.txt serve_app.py functions knowledge observability deploy)" ]; then
  echo "uncommitted changes in what the images install: commit first, so the tag names what was built" >&2
  exit 1
fi
repo="$(cd infra && pulumi stack output image_repository --stack "$stack")"
registry="${repo%%/*}"
region="$(echo "$registry" | cut -d. -f4)"
aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$registry"
for flavour in cpu gpu; do
  docker buildx build --platform linux/amd64 -f deploy/Dockerfile --target "$flavour" \
    -t "$repo:$flavour-$tag" --push .
done
echo
echo "Pin what was pushed, then run pulumi up:"
for flavour in cpu gpu; do
  digest="$(aws ecr describe-images --region "$region" --repository-name "${repo#*/}" \
    --image-ids imageTag="$flavour-$tag" --query 'imageDetails[0].imageDigest' --output text)"
  echo "  (cd infra && pulumi config set --stack $stack --path 'wxassist:image_digests.$flavour' $digest)"
done

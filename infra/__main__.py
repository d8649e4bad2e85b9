"""The Pulumi program. Placeholder: the infrastructure issue adds the ComponentResources
(network, EKS with spot/on-demand GPU node groups, KubeRay RayService from deploy/*.yaml,
model bucket, Redis, OpenTelemetry collector). This file will only wire them."""

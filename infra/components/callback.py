"""The callback URL WeChat calls: ``https://<callback_domain>/wechat/<account>``.

An ALB (made by the AWS Load Balancer Controller from this Ingress) terminates TLS with an ACM
certificate for the stack's own name, and forwards to KubeRay's serve Service
(``<rayservice>-serve-svc``). KubeRay points that Service at the active Ray cluster only and
switches it during an upgrade once the new cluster's applications are running, so WeChat
never reaches a cluster still deploying. Targets are pod IPs (``target-type: ip``) checked on
the Serve proxy's own health path, so a draining proxy leaves the ALB before it stops.
Only ``/wechat`` is routed: the console, metrics and health pages stay inside the cluster.
A Route 53 record in the stack's zone points the name at the ALB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.config import Naming

INGRESS = "wxassist-callbacks"
CALLBACK_PATH = "/wechat"
SSL_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
PROXY_HEALTH_PATH = "/-/healthz"  # Serve's proxy health: what KubeRay's readiness probe asks too


def serve_service_name(ray_service: str) -> str:
    """KubeRay's name for the Service that follows the active cluster."""
    return f"{ray_service}-serve-svc"


def ingress_spec(*, domain: str, service: str, port_name: str) -> dict:
    return {"ingressClassName": "alb", "rules": [{"host": domain, "http": {"paths": [{
        "path": CALLBACK_PATH, "pathType": "Prefix",
        "backend": {"service": {"name": service, "port": {"name": port_name}}}}]}}]}


def ingress_annotations(certificate_arn: pulumi.Input[str]) -> dict:
    return {
        "alb.ingress.kubernetes.io/scheme": "internet-facing",
        "alb.ingress.kubernetes.io/target-type": "ip",
        "alb.ingress.kubernetes.io/listen-ports": json.dumps([{"HTTPS": 443}]),
        "alb.ingress.kubernetes.io/certificate-arn": certificate_arn,
        "alb.ingress.kubernetes.io/ssl-policy": SSL_POLICY,
        "alb.ingress.kubernetes.io/healthcheck-path": PROXY_HEALTH_PATH,
        # WeChat waits 5 s per delivery: a dead proxy must leave within seconds.
        "alb.ingress.kubernetes.io/healthcheck-interval-seconds": "5",
        "alb.ingress.kubernetes.io/healthcheck-timeout-seconds": "2",
        "alb.ingress.kubernetes.io/healthy-threshold-count": "2",
        "alb.ingress.kubernetes.io/unhealthy-threshold-count": "2",
        # A callback takes at most ~5 s: an old target drains in well under a minute.
        "alb.ingress.kubernetes.io/target-group-attributes": "deregistration_delay.timeout_seconds=30",
    }


@dataclass(frozen=True)
class CallbackArgs:
    naming: Naming
    namespace: str
    domain: str
    dns_zone: str
    ray_service: str
    port_name: str


class CallbackEndpoint(pulumi.ComponentResource):
    url: str
    hostname: pulumi.Output[str]  # the ALB's own name

    def __init__(self, name: str, args: CallbackArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("wxassist:infra:CallbackEndpoint", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        zone = aws.route53.get_zone_output(name=args.dns_zone, private_zone=False,
                                           opts=pulumi.InvokeOptions(parent=self))
        certificate = aws.acm.Certificate(name, domain_name=args.domain, validation_method="DNS",
                                          tags=args.naming.tags, opts=child)
        option = certificate.domain_validation_options[0]
        proof = aws.route53.Record(f"{name}-validation", zone_id=zone.zone_id, name=option.resource_record_name,
                                   type=option.resource_record_type, records=[option.resource_record_value], ttl=300,
                                   allow_overwrite=True, opts=child)
        validated = aws.acm.CertificateValidation(name, certificate_arn=certificate.arn,
                                                  validation_record_fqdns=[proof.fqdn], opts=child)
        ingress = k8s.networking.v1.Ingress(
            name, opts=child, metadata={"name": INGRESS, "namespace": args.namespace, "labels": args.naming.labels,
                                        "annotations": ingress_annotations(validated.certificate_arn)},
            spec=ingress_spec(domain=args.domain, service=serve_service_name(args.ray_service),
                              port_name=args.port_name))
        self.hostname = ingress.status.load_balancer.ingress[0].hostname
        aws.route53.Record(name, zone_id=zone.zone_id, name=args.domain, type="CNAME", ttl=60,
                           records=[self.hostname], opts=child)
        self.url = f"https://{args.domain}{CALLBACK_PATH}/default"
        self.register_outputs({"url": self.url, "hostname": self.hostname})

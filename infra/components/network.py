"""The VPC: nodes, Redis and the Ray pods live in private subnets; public subnets hold only
the NAT gateways and the load balancer WeChat calls. Everything the pods send to the internet
(WeChat's customer-service API above all) leaves through the NAT gateways' elastic IPs: those
are the addresses to put on the Official Account's IP whitelist (``egress_ips``)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config import Naming, subnet_cidrs


@dataclass(frozen=True)
class NetworkArgs:
    naming: Naming
    cidr: str
    zones: int
    nat_gateways: int  # 1, or one per zone (StackConfig.nat_gateways)
    region: str


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    public_subnet_ids: list[pulumi.Output[str]]
    private_subnet_ids: list[pulumi.Output[str]]
    egress_ips: list[pulumi.Output[str]]  # the NAT gateways' public addresses

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("wxassist:infra:Network", name, None, opts)
        tags = args.naming.tags
        child = pulumi.ResourceOptions(parent=self)
        zones = aws.get_availability_zones_output(state="available", opts=pulumi.InvokeOptions(parent=self))
        public_cidrs, private_cidrs = subnet_cidrs(args.cidr, args.zones)

        vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=args.cidr, enable_dns_hostnames=True, enable_dns_support=True,
                          tags={**tags, "Name": f"{args.naming.prefix}-vpc"}, opts=child)
        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=tags, opts=child)
        public_routes = aws.ec2.RouteTable(
            f"{name}-public", vpc_id=vpc.id, routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": gateway.id}],
            tags=tags, opts=child)

        self.public_subnet_ids, self.private_subnet_ids = [], []
        private_route_tables: list[pulumi.Output[str]] = []
        nat_ids: list[pulumi.Output[str]] = []
        self.egress_ips = []
        for index in range(args.zones):
            zone = zones.names[index]
            public = aws.ec2.Subnet(
                f"{name}-public-{index}", vpc_id=vpc.id, cidr_block=public_cidrs[index], availability_zone=zone,
                tags={**tags, "Name": f"{args.naming.prefix}-public-{index}", "kubernetes.io/role/elb": "1"},
                opts=child)
            aws.ec2.RouteTableAssociation(f"{name}-public-{index}", subnet_id=public.id,
                                          route_table_id=public_routes.id, opts=child)
            self.public_subnet_ids.append(public.id)
            if index < args.nat_gateways:
                address = aws.ec2.Eip(f"{name}-nat-{index}", domain="vpc", tags=tags, opts=child)
                nat = aws.ec2.NatGateway(f"{name}-nat-{index}", subnet_id=public.id, allocation_id=address.id,
                                         tags=tags, opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway]))
                nat_ids.append(nat.id)
                self.egress_ips.append(address.public_ip)

            private = aws.ec2.Subnet(
                f"{name}-private-{index}", vpc_id=vpc.id, cidr_block=private_cidrs[index], availability_zone=zone,
                tags={**tags, "Name": f"{args.naming.prefix}-private-{index}", "kubernetes.io/role/internal-elb": "1"},
                opts=child)
            private_routes = aws.ec2.RouteTable(
                f"{name}-private-{index}", vpc_id=vpc.id,
                routes=[{"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat_ids[min(index, len(nat_ids) - 1)]}],
                tags=tags, opts=child)
            aws.ec2.RouteTableAssociation(f"{name}-private-{index}", subnet_id=private.id,
                                          route_table_id=private_routes.id, opts=child)
            self.private_subnet_ids.append(private.id)
            private_route_tables.append(private_routes.id)

        # Model restores read gigabytes from S3 on every GPU scale-up: through a gateway
        # endpoint that costs nothing, instead of NAT data charges.
        aws.ec2.VpcEndpoint(f"{name}-s3", vpc_id=vpc.id, service_name=f"com.amazonaws.{args.region}.s3",
                            vpc_endpoint_type="Gateway", route_table_ids=private_route_tables, tags=tags, opts=child)

        self.vpc_id = vpc.id
        self.register_outputs({"vpc_id": vpc.id, "public_subnet_ids": self.public_subnet_ids,
                               "private_subnet_ids": self.private_subnet_ids,
                               "egress_ips": self.egress_ips})

//! Unicast routes: via a gateway, device-only, default, in any table;
//! listing, idempotent adding, replacing and deleting.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::Netlink;
use crate::Error;

/// The main routing table's id.
pub const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// A route to ensure, replace or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination prefix (`0.0.0.0/0` or `::/0` for a default route).
    pub dst: IpNet,
    /// Next hop; `None` for a device-only (on-link) route.
    pub gateway: Option<IpAddr>,
    /// Output device by name; required when there is no gateway.
    pub dev: Option<String>,
    /// Routing table; the main table when `None`.
    pub table: Option<u32>,
    /// Preferred source address.
    pub src: Option<IpAddr>,
    /// Metric (priority).
    pub metric: Option<u32>,
    /// Treat the gateway as on-link even if no prefix covers it.
    pub onlink: bool,
}

impl RouteSpec {
    /// A route to `dst` via `gateway`.
    pub fn via(dst: IpNet, gateway: IpAddr) -> RouteSpec {
        RouteSpec {
            dst,
            gateway: Some(gateway),
            dev: None,
            table: None,
            src: None,
            metric: None,
            onlink: false,
        }
    }

    /// A device-only route to `dst` out of `dev`.
    pub fn dev(dst: IpNet, dev: &str) -> RouteSpec {
        RouteSpec {
            dst,
            gateway: None,
            dev: Some(dev.to_owned()),
            table: None,
            src: None,
            metric: None,
            onlink: false,
        }
    }

    /// A default route via `gateway` (IPv4 or IPv6 after the gateway).
    pub fn default_via(gateway: IpAddr) -> RouteSpec {
        let any = match gateway {
            IpAddr::V4(_) => IpNet::V4(ipnet::Ipv4Net::default()),
            IpAddr::V6(_) => IpNet::V6(ipnet::Ipv6Net::default()),
        };
        Self::via(any, gateway)
    }

    /// The same route with the output device set.
    pub fn with_dev(mut self, dev: &str) -> RouteSpec {
        self.dev = Some(dev.to_owned());
        self
    }

    /// The same route in routing table `table`.
    pub fn in_table(mut self, table: u32) -> RouteSpec {
        self.table = Some(table);
        self
    }

    fn table_id(&self) -> u32 {
        self.table.unwrap_or(MAIN_TABLE)
    }

    fn describe(&self) -> String {
        let mut text = format!("route {}", self.dst);
        if let Some(gateway) = self.gateway {
            text.push_str(&format!(" via {gateway}"));
        }
        if let Some(dev) = &self.dev {
            text.push_str(&format!(" dev {dev}"));
        }
        if let Some(table) = self.table {
            text.push_str(&format!(" table {table}"));
        }
        text
    }
}

/// A unicast route as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix.
    pub dst: IpNet,
    /// Next hop, if any.
    pub gateway: Option<IpAddr>,
    /// Output interface index, if any.
    pub oif: Option<u32>,
    /// Routing table id.
    pub table: u32,
    /// Metric.
    pub metric: u32,
    /// Preferred source address.
    pub src: Option<IpAddr>,
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn route_from(message: &RouteMessage) -> Option<Route> {
    if message.header.kind != RouteType::Unicast {
        return None;
    }
    let mut dst_ip = match message.header.address_family {
        AddressFamily::Inet => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut route = Route {
        dst: IpNet::new(dst_ip, 0).ok()?,
        gateway: None,
        oif: None,
        table: u32::from(message.header.table),
        metric: 0,
        src: None,
    };
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(address) => dst_ip = ip_of(address)?,
            RouteAttribute::Gateway(address) => route.gateway = ip_of(address),
            RouteAttribute::Oif(index) => route.oif = Some(*index),
            RouteAttribute::Table(table) => route.table = *table,
            RouteAttribute::Priority(metric) => route.metric = *metric,
            RouteAttribute::PrefSource(address) => route.src = ip_of(address),
            _ => {}
        }
    }
    route.dst = IpNet::new(dst_ip, message.header.destination_prefix_length).ok()?;
    Some(route)
}

impl Netlink {
    /// Unicast routes of both families in table `table` (every table when
    /// `None`).
    pub fn routes(&mut self, table: Option<u32>) -> Result<Vec<Route>, Error> {
        let mut routes = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut request = RouteMessage::default();
            request.header.address_family = family;
            let replies = self.dump(RouteNetlinkMessage::GetRoute(request), "list routes")?;
            routes.extend(
                replies
                    .iter()
                    .filter_map(|reply| match reply {
                        RouteNetlinkMessage::NewRoute(message) => route_from(message),
                        _ => None,
                    })
                    .filter(|route| table.is_none_or(|table| route.table == table)),
            );
        }
        Ok(routes)
    }

    fn route_message(&mut self, spec: &RouteSpec) -> Result<RouteMessage, Error> {
        let mut message = RouteMessage::default();
        message.header.address_family = match spec.dst {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        message.header.destination_prefix_length = spec.dst.prefix_len();
        let table = spec.table_id();
        message.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        message.header.protocol = RouteProtocol::Static;
        message.header.kind = RouteType::Unicast;
        message.header.scope = if spec.gateway.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        if spec.onlink {
            message.header.flags = RouteFlags::Onlink;
        }
        message
            .attributes
            .push(RouteAttribute::Destination(spec.dst.network().into()));
        message.attributes.push(RouteAttribute::Table(table));
        if let Some(gateway) = spec.gateway {
            message
                .attributes
                .push(RouteAttribute::Gateway(gateway.into()));
        }
        if let Some(dev) = &spec.dev {
            let index = self.require_link(dev)?.index;
            message.attributes.push(RouteAttribute::Oif(index));
        }
        if let Some(src) = spec.src {
            message
                .attributes
                .push(RouteAttribute::PrefSource(src.into()));
        }
        if let Some(metric) = spec.metric {
            message.attributes.push(RouteAttribute::Priority(metric));
        }
        Ok(message)
    }

    /// Existing routes with the same key as `spec` (destination, table and,
    /// when given, metric).
    fn routes_like(&mut self, spec: &RouteSpec) -> Result<Vec<Route>, Error> {
        let dst = spec.dst.trunc();
        Ok(self
            .routes(Some(spec.table_id()))?
            .into_iter()
            .filter(|route| route.dst == dst)
            .filter(|route| spec.metric.is_none_or(|metric| route.metric == metric))
            .collect())
    }

    /// Ensures the route exists; returns whether it was added. A route to the
    /// same destination in the same table with another next hop or device
    /// is a conflict (use [`Netlink::replace_route`] to override it).
    pub fn ensure_route(&mut self, spec: &RouteSpec) -> Result<bool, Error> {
        let oif = match &spec.dev {
            Some(dev) => Some(self.require_link(dev)?.index),
            None => None,
        };
        if let Some(existing) = self.routes_like(spec)?.first() {
            let same =
                existing.gateway == spec.gateway && oif.is_none_or(|oif| existing.oif == Some(oif));
            if same {
                return Ok(false);
            }
            return Err(Error::Conflict {
                object: spec.describe(),
                ns: self.ns.clone(),
                detail: format!(
                    "a route to {} exists via {:?} on interface {:?}",
                    existing.dst, existing.gateway, existing.oif
                ),
            });
        }
        let message = self.route_message(spec)?;
        self.change(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_EXCL,
            "add",
            &|| spec.describe(),
        )?;
        Ok(true)
    }

    /// Adds the route, replacing one with the same key.
    pub fn replace_route(&mut self, spec: &RouteSpec) -> Result<(), Error> {
        let message = self.route_message(spec)?;
        self.change(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_REPLACE,
            "replace",
            &|| spec.describe(),
        )
    }

    /// Deletes the route; returns `false` when no such route existed (or its
    /// device is gone, which takes its routes with it).
    pub fn delete_route(&mut self, spec: &RouteSpec) -> Result<bool, Error> {
        let message = match self.route_message(spec) {
            Ok(message) => message,
            Err(Error::NotFound { .. }) => return Ok(false),
            Err(err) => return Err(err),
        };
        match self.change(RouteNetlinkMessage::DelRoute(message), 0, "delete", &|| {
            spec.describe()
        }) {
            Ok(()) => Ok(true),
            Err(err) if err.is_not_found() => Ok(false),
            Err(err) => Err(err),
        }
    }
}

//! The loopback plugin: brings `lo` up in the container's namespace on ADD
//! (and down on DEL), CHECK verifies it is up. Like the reference, the
//! result lists `lo` and its addresses unless a `prevResult` is passed on.

use weft_linux::netlink::format_mac;

use crate::kernel::{container_namespace, linux_error, netlink_in};
use crate::{CmdArgs, CniError, CniResult, ErrorCode, Interface, IpConfig, NetConf, Plugin};

/// The loopback plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct Loopback;

impl Plugin for Loopback {
    fn name(&self) -> &'static str {
        "loopback"
    }

    fn add(&self, args: &CmdArgs, conf: &NetConf) -> Result<CniResult, CniError> {
        let ns = container_namespace(args.require_netns()?)?;
        let mut netlink = netlink_in(&ns)?;
        netlink
            .set_up("lo")
            .map_err(|err| linux_error("bringing lo up", &err))?;
        if let Some(prev) = &conf.prev_result {
            return Ok(prev.clone());
        }
        let lo = netlink
            .require_link("lo")
            .map_err(|err| linux_error("reading lo", &err))?;
        let ips = netlink
            .addresses(Some("lo"))
            .map_err(|err| linux_error("reading the addresses of lo", &err))?
            .into_iter()
            .map(|address| IpConfig {
                address: address.net,
                gateway: None,
                interface: Some(0),
            })
            .collect();
        Ok(CniResult {
            interfaces: vec![Interface {
                name: "lo".into(),
                mac: Some(format_mac(&lo.mac.unwrap_or_default())),
                sandbox: Some(ns.path().display().to_string()),
                ..Interface::default()
            }],
            ips,
            ..CniResult::default()
        })
    }

    fn del(&self, args: &CmdArgs, _conf: &NetConf) -> Result<(), CniError> {
        let Some(path) = &args.netns else {
            return Ok(());
        };
        let Ok(ns) = container_namespace(path) else {
            return Ok(());
        };
        let result = netlink_in(&ns).and_then(|mut netlink| {
            netlink
                .set_down("lo")
                .map_err(|err| linux_error("bringing lo down", &err))
        });
        match result {
            // The namespace went away while we worked: nothing left to undo.
            Err(err) if err.code == ErrorCode::UnknownContainer => Ok(()),
            other => other,
        }
    }

    fn check(&self, args: &CmdArgs, _conf: &NetConf) -> Result<(), CniError> {
        let ns = container_namespace(args.require_netns()?)?;
        let lo = netlink_in(&ns)?
            .require_link("lo")
            .map_err(|err| linux_error("reading lo", &err))?;
        if !lo.up {
            return Err(CniError::internal("loopback interface is down"));
        }
        Ok(())
    }
}

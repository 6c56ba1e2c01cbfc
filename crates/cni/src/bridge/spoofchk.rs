//! `macspoofchk`: frames entering the bridge from the attachment's node-side
//! veth must carry the container interface's MAC as their source, like the
//! reference plugin's spoof checker. One rule per attachment in the table
//! `bridge weft-cni` (chain `prerouting`, filter hook at priority -300, so
//! it runs before the bridge forwards or delivers anything):
//! `iifname <veth> ether saddr != <container MAC> drop`, tagged
//! `weft-bridge <network> <containerID> <ifname>` (see [`crate::nat_rules`]).

use weft_nft::expr::matches;
use weft_nft::{ChainType, Expr, Family, Hook, Reg, Rule};

use crate::nat_rules::Tables;

/// The filter base chain spoof-check rules live in.
pub const CHAIN: &str = "prerouting";

/// weft's bridge-family table: `bridge weft-cni`, chain `prerouting`.
pub const TABLES: Tables = Tables {
    name: "weft-cni",
    families: &[Family::Bridge],
    kind: ChainType::Filter,
    chains: &[(CHAIN, Hook::Prerouting, -300)],
};

/// The rule dropping frames from `host_veth` whose source is not `mac` (pure).
pub fn rule_for(host_veth: &str, mac: [u8; 6]) -> (Family, Rule) {
    let rule = Rule::new(CHAIN)
        .extend(matches::iifname(host_veth, Reg::R0))
        .extend(matches::ether_saddr(mac, true, Reg::R1))
        .push(Expr::drop());
    (Family::Bridge, rule)
}

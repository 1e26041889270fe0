//! The link seam: links, addresses and routes in one network namespace
//! ([`LinkHandle`]), opened per netns by a [`Links`]. The plugin gets a `Links` passed in,
//! as it gets its [`VfConfigurator`](crate::sriov::VfConfigurator): the shipped binary
//! passes [`KernelLinks`] (route netlink), the unprivileged tests a recording double
//! (`fake_links`, cargo feature `test-fake`).

use crate::error::Error;
use crate::netlink::{Link, LinkChange, NlError, RouteSpec, Rtnl};
use crate::netns::Netns;
use crate::result::IpNet;

/// Link, address and route operations in the netns the handle was opened in. Each call
/// of the kernel implementation is one counted netlink round trip.
pub trait LinkHandle {
    /// One link by name (an altname matches too); `None` when absent.
    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NlError>;
    /// One link by ifindex; `None` when absent.
    fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, NlError>;
    /// Apply one change (move, rename, MAC, MTU, admin state) in one message; `target`
    /// names the link in errors.
    fn set_link(&mut self, c: &LinkChange, target: &str) -> Result<(), NlError>;
    /// Remove alternative names.
    fn del_altnames(&mut self, index: u32, names: &[String]) -> Result<(), NlError>;
    /// Add alternative names.
    fn add_altnames(&mut self, index: u32, names: &[String]) -> Result<(), NlError>;
    /// The addresses of one link.
    fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>, NlError>;
    /// Add an address.
    fn add_address(&mut self, index: u32, addr: &IpNet) -> Result<(), NlError>;
    /// Add a route through one link.
    fn add_route(&mut self, index: u32, r: &RouteSpec) -> Result<(), NlError>;
    /// Ask the kernel to announce the link's addresses when it comes up (`arp_notify`
    /// for IPv4, `ndisc_notify` for IPv6). Best effort: a failure is not an error.
    fn announce(&mut self, ifname: &str, v4: bool, v6: bool);
}

/// Opens [`LinkHandle`]s: in the host netns (the calling thread's) or in another one.
pub trait Links {
    /// A handle in the host netns.
    fn host(&mut self) -> crate::Result<Box<dyn LinkHandle>>;
    /// A handle in `ns`, entered from `home` (where the calling thread returns).
    fn in_netns(&mut self, ns: &Netns, home: &Netns) -> crate::Result<Box<dyn LinkHandle>>;
}

/// The real [`Links`]: a route netlink socket bound in each netns.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelLinks;

/// A route netlink socket and, for a netns other than the host's, that netns (for the
/// sysctls [`LinkHandle::announce`] writes).
struct KernelHandle {
    rtnl: Rtnl,
    ns: Option<(Netns, Netns)>,
}

impl Links for KernelLinks {
    fn host(&mut self) -> crate::Result<Box<dyn LinkHandle>> {
        Ok(Box::new(KernelHandle {
            rtnl: Rtnl::new()?,
            ns: None,
        }))
    }

    fn in_netns(&mut self, ns: &Netns, home: &Netns) -> crate::Result<Box<dyn LinkHandle>> {
        let rtnl = ns
            .run(home, Rtnl::new)
            .map_err(|e| Error::Other(e.to_string()))??;
        let dup = |n: &Netns| n.try_clone().map_err(|e| Error::Other(e.to_string()));
        Ok(Box::new(KernelHandle {
            rtnl,
            ns: Some((dup(ns)?, dup(home)?)),
        }))
    }
}

impl LinkHandle for KernelHandle {
    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NlError> {
        self.rtnl.link_by_name(name)
    }
    fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, NlError> {
        self.rtnl.link_by_index(index)
    }
    fn set_link(&mut self, c: &LinkChange, target: &str) -> Result<(), NlError> {
        self.rtnl.set_link(c, target)
    }
    fn del_altnames(&mut self, index: u32, names: &[String]) -> Result<(), NlError> {
        self.rtnl.del_altnames(index, names)
    }
    fn add_altnames(&mut self, index: u32, names: &[String]) -> Result<(), NlError> {
        self.rtnl.add_altnames(index, names)
    }
    fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>, NlError> {
        self.rtnl.addresses(index)
    }
    fn add_address(&mut self, index: u32, addr: &IpNet) -> Result<(), NlError> {
        self.rtnl.add_address(index, addr)
    }
    fn add_route(&mut self, index: u32, r: &RouteSpec) -> Result<(), NlError> {
        self.rtnl.add_route(index, r)
    }
    fn announce(&mut self, ifname: &str, v4: bool, v6: bool) {
        let write = || {
            if v4 {
                let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{ifname}/arp_notify"), "1");
            }
            if v6 {
                let _ = std::fs::write(
                    format!("/proc/sys/net/ipv6/conf/{ifname}/ndisc_notify"),
                    "1",
                );
            }
        };
        // The sysctls are per netns: written from inside the one the handle is in.
        match &self.ns {
            Some((ns, home)) => {
                let _ = ns.run(home, write);
            }
            None => write(),
        }
    }
}

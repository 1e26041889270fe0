//! A small synchronous rtnetlink client: one socket per network namespace, one request
//! and its answer per call, every round trip counted.
//!
//! No call dumps the link table: links are read one at a time by name or index, and the
//! VF table of a PF with one `RTM_GETLINK` carrying `IFLA_EXT_MASK = RTEXT_FILTER_VF`.

use crate::config::Mac;
use crate::result::IpNet;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkFlags, LinkMessage, LinkVfInfo, Prop, VfInfo,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::net::IpAddr;
use std::os::fd::RawFd;

thread_local! {
    static ROUND_TRIPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Netlink round trips (request + answer) made by the calling thread so far, on every
/// socket (route and RDMA). The plugin runs its commands on one thread.
pub fn round_trips() -> u64 {
    ROUND_TRIPS.with(|c| c.get())
}

pub(crate) fn count_round_trip() {
    ROUND_TRIPS.with(|c| c.set(c.get() + 1));
}

/// A failed netlink operation: what was done, on what, and the kernel's errno.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op} {target}: {msg}")]
pub struct NlError {
    /// The operation (`set link`, `add address`, `get VF table`).
    pub op: String,
    /// What it was done on (`eth0`, `index 7`).
    pub target: String,
    /// The errno when the kernel (or a syscall) gave one.
    pub errno: Option<i32>,
    /// Human-readable reason.
    pub msg: String,
}

impl NlError {
    /// Build from an errno.
    pub fn errno(op: impl Into<String>, target: impl Into<String>, errno: i32) -> Self {
        NlError {
            op: op.into(),
            target: target.into(),
            errno: Some(errno),
            msg: std::io::Error::from_raw_os_error(errno).to_string(),
        }
    }

    /// Build from a message with no errno.
    pub fn msg(op: impl Into<String>, target: impl Into<String>, msg: impl Into<String>) -> Self {
        NlError {
            op: op.into(),
            target: target.into(),
            errno: None,
            msg: msg.into(),
        }
    }

    /// Build from an I/O error.
    pub fn io(op: impl Into<String>, target: impl Into<String>, e: &std::io::Error) -> Self {
        NlError {
            op: op.into(),
            target: target.into(),
            errno: e.raw_os_error(),
            msg: e.to_string(),
        }
    }

    /// Whether the error means "no such device".
    pub fn is_no_device(&self) -> bool {
        self.errno == Some(libc::ENODEV)
    }
}

/// What one link looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// ifindex.
    pub index: u32,
    /// Name.
    pub name: String,
    /// MAC (None for non-Ethernet addresses).
    pub mac: Option<Mac>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// Alternative names.
    pub altnames: Vec<String>,
    /// The hardware address as the kernel shows it, any length (20 bytes on IPoIB).
    pub hw_addr: Option<String>,
}

/// A change to one link, sent as one `RTM_SETLINK`. The kernel applies the netns move
/// first, then the address, MTU and name, then the flags, so a link can be moved,
/// renamed, re-addressed and brought up or down in one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkChange {
    /// Target link's ifindex (in the socket's netns).
    pub index: u32,
    /// Move into the netns of this fd.
    pub netns_fd: Option<RawFd>,
    /// Keep this ifindex in the new netns (EBUSY if taken, before anything changes).
    pub new_ifindex: Option<i32>,
    /// New name.
    pub name: Option<String>,
    /// New MAC.
    pub mac: Option<Mac>,
    /// New MTU.
    pub mtu: Option<u32>,
    /// Set the admin state.
    pub up: Option<bool>,
}

/// A route to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination.
    pub dst: IpNet,
    /// Gateway.
    pub gw: Option<IpAddr>,
    /// Metric.
    pub priority: Option<u32>,
    /// Table (main when absent).
    pub table: Option<u32>,
}

/// A route netlink socket bound in the netns it was created in.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

const RECV_BUF: usize = 256 * 1024;

impl Rtnl {
    /// Open a socket in the calling thread's current netns.
    pub fn new() -> Result<Rtnl, NlError> {
        let mut sock = Socket::new(NETLINK_ROUTE)
            .map_err(|e| NlError::io("open", "NETLINK_ROUTE socket", &e))?;
        sock.bind_auto()
            .map_err(|e| NlError::io("bind", "NETLINK_ROUTE socket", &e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| NlError::io("connect", "NETLINK_ROUTE socket", &e))?;
        // Extended ACKs carry the kernel's reason text; capped ACKs keep answers small.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        Ok(Rtnl {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Send one request and collect its answers until the ACK (or the single reply of a
    /// GET). Exactly one counted round trip.
    pub fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &str,
        target: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        self.roundtrip(&out, op, target)
    }

    /// Send pre-serialized bytes (tests use this for malformed requests).
    pub fn request_raw(
        &mut self,
        bytes: &[u8],
        op: &str,
        target: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        self.roundtrip(bytes, op, target)
    }

    fn roundtrip(
        &mut self,
        bytes: &[u8],
        op: &str,
        target: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        // The sequence number is bytes 8..12 of the header; raw requests may be shorter.
        let seq = bytes
            .get(8..12)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_ne_bytes)
            .ok_or_else(|| NlError::msg(op, target, "request shorter than a netlink header"))?;
        count_round_trip();
        self.sock
            .send(bytes, 0)
            .map_err(|e| NlError::io(op, target, &e))?;
        let mut replies = Vec::new();
        loop {
            self.buf.clear();
            let n = self
                .sock
                .recv(&mut self.buf, 0)
                .map_err(|e| NlError::io(op, target, &e))?;
            let answer = self
                .buf
                .get(..n)
                .ok_or_else(|| NlError::msg(op, target, "netlink answer truncated"))?;
            let mut off = 0;
            while let Some(rest) = answer.get(off..).filter(|r| !r.is_empty()) {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|e| NlError::msg(op, target, format!("cannot parse answer: {e}")))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                if len > rest.len() {
                    return Err(NlError::msg(op, target, "netlink answer truncated"));
                }
                off += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(c) => {
                                let mut err = NlError::errno(op, target, -c.get());
                                if let Some(text) = ext_ack_message(&e.header) {
                                    err.msg = format!("{} ({text})", err.msg);
                                }
                                Err(err)
                            }
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(m) => {
                        replies.push(m);
                        // A GET without ACK flag ends with its single reply.
                        if msg.header.flags & netlink_packet_core::NLM_F_MULTIPART == 0 {
                            return Ok(replies);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn get_link(
        &mut self,
        msg: LinkMessage,
        target: &str,
        vfs: bool,
    ) -> Result<Option<LinkMessage>, NlError> {
        let mut msg = msg;
        let mut mask = vec![LinkExtentMask::SkipStats];
        if vfs {
            mask.push(LinkExtentMask::Vf);
        }
        msg.attributes.push(LinkAttribute::ExtMask(mask));
        match self.request(RouteNetlinkMessage::GetLink(msg), 0, "get link", target) {
            Ok(mut r) => Ok(match r.pop() {
                Some(RouteNetlinkMessage::NewLink(l)) => Some(l),
                _ => None,
            }),
            Err(e) if e.is_no_device() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Read one link by name; `None` if there is none in this netns.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NlError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        Ok(self.get_link(m, name, false)?.map(|l| to_link(&l)))
    }

    /// Read one link by index; `None` if there is none in this netns.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, NlError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        Ok(self
            .get_link(m, &format!("index {index}"), false)?
            .map(|l| to_link(&l)))
    }

    /// Read a PF with its VF table (one request, no dump).
    pub fn link_with_vfs(
        &mut self,
        name: &str,
    ) -> Result<Option<(Link, Vec<LinkVfInfo>)>, NlError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        Ok(self.get_link(m, name, true)?.map(|l| {
            let vfs = l
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::VfInfoList(v) => Some(v.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            (to_link(&l), vfs)
        }))
    }

    /// Apply a [`LinkChange`] in one message.
    pub fn set_link(&mut self, c: &LinkChange, target: &str) -> Result<(), NlError> {
        self.request(
            RouteNetlinkMessage::SetLink(link_change_message(c)),
            NLM_F_ACK,
            "set link",
            target,
        )
        .map(|_| ())
    }

    /// Send VF attributes for a PF in one `RTM_SETLINK`.
    pub fn set_vf_info(
        &mut self,
        pf_index: u32,
        info: Vec<VfInfo>,
        target: &str,
    ) -> Result<(), NlError> {
        self.request(
            RouteNetlinkMessage::SetLink(vf_message(pf_index, info)),
            NLM_F_ACK,
            "set VF",
            target,
        )
        .map(|_| ())
    }

    /// Remove alternative names from a link (one request).
    pub fn del_altnames(&mut self, index: u32, names: &[String]) -> Result<(), NlError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::PropList(
            names.iter().map(|n| Prop::AltIfName(n.clone())).collect(),
        ));
        self.request(
            RouteNetlinkMessage::DelLinkProp(m),
            NLM_F_ACK,
            "delete altnames of",
            &format!("index {index}"),
        )
        .map(|_| ())
    }

    /// The addresses of one link (a dump of the netns' addresses, filtered; CHECK only).
    pub fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>, NlError> {
        let mut m = AddressMessage::default();
        m.header.index = index;
        let answers = self.request(
            RouteNetlinkMessage::GetAddress(m),
            netlink_packet_core::NLM_F_DUMP,
            "list addresses of",
            &format!("index {index}"),
        )?;
        let mut out = Vec::new();
        for a in answers {
            if let RouteNetlinkMessage::NewAddress(a) = a
                && a.header.index == index
            {
                for attr in &a.attributes {
                    if let AddressAttribute::Address(ip) = attr {
                        out.push(IpNet {
                            addr: *ip,
                            prefix: a.header.prefix_len,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Add alternative names to a link (one request).
    pub fn add_altnames(&mut self, index: u32, names: &[String]) -> Result<(), NlError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::PropList(
            names.iter().map(|n| Prop::AltIfName(n.clone())).collect(),
        ));
        self.request(
            RouteNetlinkMessage::NewLinkProp(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            "add altnames to",
            &format!("index {index}"),
        )
        .map(|_| ())
    }

    /// Add an address to a link.
    pub fn add_address(&mut self, index: u32, addr: &IpNet) -> Result<(), NlError> {
        let mut m = AddressMessage::default();
        m.header.family = family(&addr.addr);
        m.header.prefix_len = addr.prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(addr.addr));
        m.attributes.push(AddressAttribute::Address(addr.addr));
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            "add address",
            &format!("{addr} on index {index}"),
        )
        .map(|_| ())
    }

    /// Add a route through a link.
    pub fn add_route(&mut self, index: u32, r: &RouteSpec) -> Result<(), NlError> {
        let mut m = RouteMessage::default();
        m.header.address_family = family(&r.dst.addr);
        m.header.destination_prefix_length = r.dst.prefix;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.kind = RouteType::Unicast;
        m.header.scope = if r.gw.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        if r.dst.prefix > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(r.dst.addr)));
        }
        if let Some(gw) = r.gw {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        m.attributes.push(RouteAttribute::Oif(index));
        if let Some(p) = r.priority {
            m.attributes.push(RouteAttribute::Priority(p));
        }
        if let Some(t) = r.table {
            m.attributes.push(RouteAttribute::Table(t));
        }
        self.request(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            "add route",
            &format!("{} via {:?} on index {index}", r.dst, r.gw),
        )
        .map(|_| ())
    }
}

/// The `NLMSGERR_ATTR_MSG` text of an extended ACK: the bytes after the error code are
/// the echoed request header (capped ACK), then attributes.
pub fn ext_ack_message(after_code: &[u8]) -> Option<String> {
    let mut off = 16;
    while off + 4 <= after_code.len() {
        let len = u16::from_ne_bytes([after_code[off], after_code[off + 1]]) as usize;
        let kind = u16::from_ne_bytes([after_code[off + 2], after_code[off + 3]]);
        if len < 4 || off + len > after_code.len() {
            return None;
        }
        if kind == 1 {
            let text = String::from_utf8_lossy(&after_code[off + 4..off + len])
                .trim_end_matches('\0')
                .to_string();
            return (!text.is_empty()).then_some(text);
        }
        off += (len + 3) & !3;
    }
    None
}

fn family(a: &IpAddr) -> AddressFamily {
    if a.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// The `RTM_SETLINK` body for a [`LinkChange`].
pub fn link_change_message(c: &LinkChange) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = c.index;
    if let Some(up) = c.up {
        m.header.change_mask = LinkFlags::Up;
        m.header.flags = if up {
            LinkFlags::Up
        } else {
            LinkFlags::empty()
        };
    }
    if let Some(fd) = c.netns_fd {
        m.attributes.push(LinkAttribute::NetNsFd(fd));
    }
    if let Some(i) = c.new_ifindex {
        m.attributes.push(LinkAttribute::NewIfIndex(i));
    }
    if let Some(n) = &c.name {
        m.attributes.push(LinkAttribute::IfName(n.clone()));
    }
    if let Some(mac) = c.mac {
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
    if let Some(mtu) = c.mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    m
}

/// The `RTM_SETLINK` body carrying VF attributes for the PF at `pf_index`.
pub fn vf_message(pf_index: u32, info: Vec<VfInfo>) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = pf_index;
    m.attributes
        .push(LinkAttribute::VfInfoList(vec![LinkVfInfo(info)]));
    m
}

/// Serialize an rtnetlink request as it goes on the wire (sequence number `seq`).
pub fn encode(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = seq;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    nl.finalize();
    let mut out = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut out);
    out
}

fn to_link(l: &LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: l.header.flags.contains(LinkFlags::Up),
        altnames: Vec::new(),
        hw_addr: None,
    };
    for a in &l.attributes {
        if let LinkAttribute::Address(a) = a
            && !a.is_empty()
        {
            link.hw_addr = Some(
                a.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            );
        }
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(a);
                link.mac = Some(Mac(m));
            }
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::PropList(props) => {
                for p in props {
                    if let Prop::AltIfName(n) = p {
                        link.altnames.push(n.clone());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_shorter_than_a_header_is_an_error_and_sends_nothing() {
        // A route netlink socket needs no privilege; nothing is changed.
        let mut r = Rtnl::new().unwrap();
        let before = round_trips();
        for short in [&[][..], &[0u8; 4][..], &[0u8; 11][..]] {
            let e = r.request_raw(short, "set VF", "pf0").unwrap_err();
            assert!(
                e.to_string().contains("shorter than a netlink header"),
                "{e}"
            );
        }
        assert_eq!(round_trips(), before);
    }

    #[test]
    fn ipoib_address_is_kept_as_the_kernel_shows_it() {
        // 20 bytes: QPN/flags, subnet prefix fe80::, port GUID.
        let mut a = vec![0x80, 0x00, 0x00, 0x48, 0xfe, 0x80, 0, 0, 0, 0, 0, 0];
        a.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 0x0a, 0x01]);
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::Address(a));
        let l = to_link(&m);
        assert_eq!(l.mac, None);
        assert_eq!(
            l.hw_addr.as_deref(),
            Some("80:00:00:48:fe:80:00:00:00:00:00:00:02:00:00:00:00:00:0a:01")
        );
        let mut m = LinkMessage::default();
        m.attributes
            .push(LinkAttribute::Address(vec![0x0c, 0x42, 0xa1, 0, 0, 9]));
        let l = to_link(&m);
        assert_eq!(l.mac.map(|m| m.to_string()), l.hw_addr);
    }
}

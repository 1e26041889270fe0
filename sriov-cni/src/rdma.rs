//! RDMA netlink (`NETLINK_RDMA`): find an RDMA device's index and move it to another
//! network namespace (`RDMA_NLDEV_CMD_SET` with `RDMA_NLDEV_NET_NS_FD`), as
//! `rdma dev set <dev> netns <ns>` does. netlink-packet-route has no RDMA family, so the
//! few messages needed are encoded here.

use crate::netlink::{NlError, count_round_trip};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_RDMA};

/// `RDMA_NL_NLDEV`: the nldev client of RDMA netlink.
pub const RDMA_NL_NLDEV: u16 = 5;
/// `RDMA_NLDEV_CMD_GET`.
pub const RDMA_NLDEV_CMD_GET: u16 = 1;
/// `RDMA_NLDEV_CMD_SET`.
pub const RDMA_NLDEV_CMD_SET: u16 = 2;
/// `RDMA_NLDEV_ATTR_DEV_INDEX` (u32).
pub const RDMA_NLDEV_ATTR_DEV_INDEX: u16 = 1;
/// `RDMA_NLDEV_ATTR_DEV_NAME` (string).
pub const RDMA_NLDEV_ATTR_DEV_NAME: u16 = 2;
/// `RDMA_NLDEV_NET_NS_FD` (u32).
pub const RDMA_NLDEV_NET_NS_FD: u16 = 68;

const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// `RDMA_NL_GET_TYPE(client, op)`.
pub fn nl_type(op: u16) -> u16 {
    (RDMA_NL_NLDEV << 10) + op
}

fn push_u32_attr(buf: &mut Vec<u8>, kind: u16, v: u32) {
    buf.extend_from_slice(&8u16.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&v.to_ne_bytes());
}

fn message(kind: u16, flags: u16, seq: u32, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + attrs.len() as u32;
    let mut b = Vec::with_capacity(len as usize);
    b.extend_from_slice(&len.to_ne_bytes());
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(attrs);
    b
}

/// The request moving RDMA device `index` into the netns of `netns_fd`.
pub fn set_netns_request(index: u32, netns_fd: u32, seq: u32) -> Vec<u8> {
    let mut attrs = Vec::new();
    push_u32_attr(&mut attrs, RDMA_NLDEV_ATTR_DEV_INDEX, index);
    push_u32_attr(&mut attrs, RDMA_NLDEV_NET_NS_FD, netns_fd);
    message(
        nl_type(RDMA_NLDEV_CMD_SET),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        &attrs,
    )
}

/// The request dumping the RDMA devices visible in the socket's netns.
pub fn dump_request(seq: u32) -> Vec<u8> {
    message(
        nl_type(RDMA_NLDEV_CMD_GET),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        &[],
    )
}

/// Parse one nldev answer's attributes into (index, name).
pub fn parse_device(payload: &[u8]) -> (Option<u32>, Option<String>) {
    let (mut idx, mut name) = (None, None);
    let mut off = 0;
    while off + 4 <= payload.len() {
        let len = u16::from_ne_bytes([payload[off], payload[off + 1]]) as usize;
        let kind = u16::from_ne_bytes([payload[off + 2], payload[off + 3]]) & 0x3fff;
        if len < 4 || off + len > payload.len() {
            break;
        }
        let v = &payload[off + 4..off + len];
        match kind {
            RDMA_NLDEV_ATTR_DEV_INDEX if v.len() >= 4 => {
                idx = Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]]));
            }
            RDMA_NLDEV_ATTR_DEV_NAME => {
                name = Some(
                    String::from_utf8_lossy(v)
                        .trim_end_matches('\0')
                        .to_string(),
                );
            }
            _ => {}
        }
        off += (len + 3) & !3;
    }
    (idx, name)
}

/// An RDMA netlink socket in the calling thread's netns.
pub struct RdmaNl {
    sock: Socket,
    seq: u32,
}

impl RdmaNl {
    /// Open it (fails with EPROTONOSUPPORT when `ib_core` is not loaded).
    pub fn new() -> Result<RdmaNl, NlError> {
        let mut sock = Socket::new(NETLINK_RDMA)
            .map_err(|e| NlError::io("open", "NETLINK_RDMA socket", &e))?;
        sock.bind_auto()
            .map_err(|e| NlError::io("bind", "NETLINK_RDMA socket", &e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| NlError::io("connect", "NETLINK_RDMA socket", &e))?;
        Ok(RdmaNl { sock, seq: 0 })
    }

    fn roundtrip(&mut self, req: &[u8], op: &str, target: &str) -> Result<Vec<Vec<u8>>, NlError> {
        count_round_trip();
        self.sock
            .send(req, 0)
            .map_err(|e| NlError::io(op, target, &e))?;
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        loop {
            buf.clear();
            let n = self
                .sock
                .recv(&mut buf, 0)
                .map_err(|e| NlError::io(op, target, &e))?;
            let answer = buf
                .get(..n)
                .ok_or_else(|| NlError::msg(op, target, "RDMA netlink answer truncated"))?;
            match split_answer(answer, &mut out) {
                Err(()) => return Err(NlError::msg(op, target, "malformed RDMA netlink answer")),
                Ok(Some(0)) => return Ok(out),
                Ok(Some(code)) => return Err(NlError::errno(op, target, -code)),
                Ok(None) => {}
            }
        }
    }

    /// The index of RDMA device `name` in this netns.
    pub fn index_of(&mut self, name: &str) -> Result<Option<u32>, NlError> {
        self.seq += 1;
        let req = dump_request(self.seq);
        let answers = self.roundtrip(&req, "list RDMA devices for", name)?;
        Ok(answers
            .iter()
            .map(|p| parse_device(p))
            .find(|(_, n)| n.as_deref() == Some(name))
            .and_then(|(i, _)| i))
    }

    /// Move RDMA device `index` to the netns of `netns_fd`.
    pub fn set_netns(&mut self, index: u32, netns_fd: u32, name: &str) -> Result<(), NlError> {
        self.seq += 1;
        let req = set_netns_request(index, netns_fd, self.seq);
        self.roundtrip(&req, "move RDMA device", name).map(|_| ())
    }
}

/// Split one datagram of RDMA netlink answers: each message's payload goes to `out`.
/// `Some(code)` at the end of the exchange (`NLMSG_ERROR`: 0 = ACK; `NLMSG_DONE`: 0),
/// `None` when more datagrams follow, `Err` when a length field points past the datagram
/// (every read is bounded: a short or lying answer is an error, never a panic).
fn split_answer(buf: &[u8], out: &mut Vec<Vec<u8>>) -> Result<Option<i32>, ()> {
    let word = |at: usize| -> Option<[u8; 4]> { buf.get(at..at + 4)?.try_into().ok() };
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = word(off).map(u32::from_ne_bytes).ok_or(())? as usize;
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        if len < 16 || len > buf.len() - off {
            return Err(());
        }
        match kind {
            NLMSG_ERROR => {
                // The error code is the first word of the payload.
                if len < 20 {
                    return Err(());
                }
                return word(off + 16).map(i32::from_ne_bytes).map(Some).ok_or(());
            }
            NLMSG_DONE => return Ok(Some(0)),
            _ => out.push(buf[off + 16..off + len].to_vec()),
        }
        off += (len + 3) & !3;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_netns_bytes() {
        let b = set_netns_request(3, 9, 7);
        let mut want = Vec::new();
        want.extend_from_slice(&32u32.to_ne_bytes()); // len
        want.extend_from_slice(&((5u16 << 10) + 2).to_ne_bytes()); // 0x1402
        want.extend_from_slice(&5u16.to_ne_bytes()); // REQUEST|ACK
        want.extend_from_slice(&7u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[8, 0, 1, 0, 3, 0, 0, 0]); // DEV_INDEX=3
        want.extend_from_slice(&[8, 0, 68, 0, 9, 0, 0, 0]); // NET_NS_FD=9
        assert_eq!(b, want);
        assert_eq!(nl_type(RDMA_NLDEV_CMD_SET), 0x1402);
    }

    #[test]
    fn parse_dev_attrs() {
        let mut p = Vec::new();
        push_u32_attr(&mut p, RDMA_NLDEV_ATTR_DEV_INDEX, 4);
        p.extend_from_slice(&11u16.to_ne_bytes());
        p.extend_from_slice(&RDMA_NLDEV_ATTR_DEV_NAME.to_ne_bytes());
        p.extend_from_slice(b"mlx5_2\0\0");
        assert_eq!(parse_device(&p), (Some(4), Some("mlx5_2".into())));
    }

    fn header(len: u32, kind: u16) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&len.to_ne_bytes());
        h.extend_from_slice(&kind.to_ne_bytes());
        h.extend_from_slice(&[0; 10]);
        h
    }

    #[test]
    fn short_or_lying_answers_are_errors_not_panics() {
        let mut out = Vec::new();
        // An NLMSG_ERROR that ends before its error code (len 16, nothing after).
        assert_eq!(split_answer(&header(16, NLMSG_ERROR), &mut out), Err(()));
        // A length past the datagram, and one shorter than a header.
        assert_eq!(split_answer(&header(64, 0x1401), &mut out), Err(()));
        assert_eq!(split_answer(&header(8, 0x1401), &mut out), Err(()));
        // Fewer bytes than a header: nothing to read, more datagrams expected.
        assert_eq!(split_answer(&[1, 2, 3], &mut out), Ok(None));
        assert!(out.is_empty());
        // Well-formed: a reply, then the ACK with its code.
        let mut b = header(20, 0x1401);
        b.extend_from_slice(&[9, 9, 9, 9]);
        b.extend(header(20, NLMSG_ERROR));
        b.extend_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(split_answer(&b, &mut out), Ok(Some(-libc::EPERM)));
        assert_eq!(out, vec![vec![9, 9, 9, 9]]);
        assert_eq!(split_answer(&header(16, NLMSG_DONE), &mut out), Ok(Some(0)));
    }
}

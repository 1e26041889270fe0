//! A connection layer in front of h2 that makes every request's `:authority` acceptable,
//! and reports what h2 refuses.
//!
//! # Why
//!
//! gRPC over a unix socket has no real host name, so clients put something else in the
//! HTTP/2 `:authority` pseudo-header. The kubelet's device manager sends `localhost`
//! (since Kubernetes 1.26), but its plugin watcher dials the bare socket path, and grpc-go
//! then sends that path (raw in older releases, percent-encoded in newer ones); grpcio,
//! grpc-java and grpcurl do the same when told the path. `h2`, under tonic, parses
//! `:authority` as a URI authority and resets the stream with `PROTOCOL_ERROR` before any
//! service sees the request. So the plugin-watcher registration path fails.
//!
//! # How
//!
//! [`H2Front`] wraps each accepted socket. On the client-to-server side it walks the
//! HTTP/2 frames: every header block (HEADERS plus CONTINUATION frames) is decoded with
//! `loona-hpack`, keeping the client's dynamic table in step. A block whose `:authority`
//! h2 would refuse (the test is `http`'s own `Authority` parser, the one h2 uses) has it
//! replaced by `localhost` and is re-encoded. Until the first rewrite every block is passed
//! on byte for byte, so valid clients (the kubelet's device manager, our own tonic client)
//! are untouched. From the first rewrite on, every block of that connection is re-encoded
//! with one encoder, whose first block starts by resetting h2's dynamic table (size
//! updates to 0 and back to 4096), so h2's table and the encoder's always agree. DATA and
//! other frames pass through without being buffered whole.
//!
//! On the server-to-client side it only watches: a `RST_STREAM` or `GOAWAY` with an
//! error code other than `NO_ERROR`/`CANCEL` is a request refused below our services, and
//! is logged as a warning naming the socket, the stream and the code (h2 itself only logs
//! such refusals at debug level).
//!
//! Alternatives weighed: forking or vendoring h2/tonic (a patch to maintain against every
//! release, and the issue forbids it); an h2 option (none exists: the check is
//! unconditional); a proxy socket in front of the server (a second hop per call, and
//! socket files to manage); a hand-written HPACK decoder (Huffman and dynamic table
//! handling are exactly where subtle bugs live; `loona-hpack` is a maintained fork of
//! `hpack` that passes h2spec). Anything this layer cannot parse is passed through
//! unchanged from then on, so h2 stays the judge of what is malformed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::{debug, warn};

/// The client connection preface every HTTP/2 connection starts with.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame header length.
const FRAME_HEADER: usize = 9;
/// `SETTINGS_MAX_FRAME_SIZE` h2 announces (the protocol default; tonic does not change it).
const MAX_FRAME: usize = 16_384;
/// `SETTINGS_HEADER_TABLE_SIZE` h2 announces (the protocol default).
const TABLE_SIZE: usize = 4_096;
/// What a refused `:authority` is replaced with.
const AUTHORITY: &[u8] = b"localhost";

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// How much of a GOAWAY's debug data goes into the warning.
const GOAWAY_DEBUG_MAX: usize = 128;

/// A socket with the `:authority` fix on what it reads and the refusal watch on what it
/// writes; see the module docs.
#[derive(Debug)]
pub struct H2Front<S> {
    inner: S,
    socket: Arc<str>,
    rx: Inbound,
    tx: Outbound,
}

impl<S> H2Front<S> {
    /// Wraps `inner`; `socket` names it in log lines.
    pub fn new(inner: S, socket: Arc<str>) -> Self {
        Self {
            inner,
            socket,
            rx: Inbound::default(),
            tx: Outbound::default(),
        }
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// What the client-to-server side is doing.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
enum Phase {
    /// Waiting for the connection preface.
    #[default]
    Preface,
    /// Walking frames.
    Frames,
    /// Not (or no longer) understood: everything passes unchanged, h2 decides.
    Passthrough,
}

/// A header block being collected across HEADERS and CONTINUATION frames.
#[derive(Debug)]
struct Block {
    stream: u32,
    /// END_STREAM of the HEADERS frame.
    end_stream: bool,
    /// The HEADERS frame's priority fields, if it had them.
    priority: Option<[u8; 5]>,
    /// The frames as received, to pass on unchanged when nothing needs fixing.
    raw: Vec<u8>,
    /// The header block fragment, padding removed.
    fragment: Vec<u8>,
}

/// What one header block needed, for the caller to log.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// `:authority` was refused by h2's rule and replaced.
    Rewrote { stream: u32, authority: Vec<u8> },
    /// The stream could not be understood; the connection passes through from here.
    GaveUp { stream: u32, why: String },
}

/// The client-to-server side: frames in, (possibly rewritten) frames out.
#[derive(Default)]
struct Inbound {
    phase: Phase,
    /// Received bytes not yet walked.
    raw: Vec<u8>,
    /// Walked bytes for h2, from `ready_pos` on.
    ready: Vec<u8>,
    ready_pos: usize,
    /// Payload bytes of a passed-through frame still to come.
    payload_left: usize,
    block: Option<Block>,
    decoder: Option<Decoder<'static>>,
    /// Set at the first rewrite; from then on every block is re-encoded with it.
    encoder: Option<Encoder<'static>>,
    eof: bool,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("phase", &self.phase)
            .field("raw", &self.raw.len())
            .field("ready", &(self.ready.len() - self.ready_pos))
            .field("rewriting", &self.encoder.is_some())
            .finish_non_exhaustive()
    }
}

impl Inbound {
    fn has_ready(&self) -> bool {
        self.ready_pos < self.ready.len()
    }

    /// Takes up to `max` walked bytes.
    fn take_ready(&mut self, max: usize) -> &[u8] {
        let start = self.ready_pos;
        let end = (start + max).min(self.ready.len());
        self.ready_pos = end;
        &self.ready[start..end]
    }

    fn compact(&mut self) {
        if self.ready_pos == self.ready.len() {
            self.ready.clear();
            self.ready_pos = 0;
        }
    }

    /// Adds received bytes and walks as far as they go.
    fn feed(&mut self, data: &[u8], events: &mut Vec<Event>) {
        self.compact();
        if self.phase == Phase::Passthrough && self.raw.is_empty() {
            self.ready.extend_from_slice(data);
            return;
        }
        self.raw.extend_from_slice(data);
        self.walk(events);
    }

    /// End of the client's stream: whatever is left goes to h2 as it is.
    fn finish(&mut self) {
        self.compact();
        if let Some(block) = self.block.take() {
            self.ready.extend_from_slice(&block.raw);
        }
        self.ready.append(&mut self.raw);
        self.eof = true;
    }

    /// Passes everything from here on unchanged, starting with what is buffered.
    fn give_up(&mut self, stream: u32, why: String, events: &mut Vec<Event>) {
        if let Some(block) = self.block.take() {
            self.ready.extend_from_slice(&block.raw);
        }
        self.ready.append(&mut self.raw);
        self.phase = Phase::Passthrough;
        events.push(Event::GaveUp { stream, why });
    }

    fn walk(&mut self, events: &mut Vec<Event>) {
        loop {
            match self.phase {
                Phase::Passthrough => {
                    self.ready.append(&mut self.raw);
                    return;
                }
                Phase::Preface => {
                    let n = self.raw.len().min(PREFACE.len());
                    if self.raw[..n] != PREFACE[..n] {
                        self.give_up(0, "no HTTP/2 connection preface".into(), events);
                        continue;
                    }
                    if n < PREFACE.len() {
                        return;
                    }
                    self.ready.extend(self.raw.drain(..PREFACE.len()));
                    self.phase = Phase::Frames;
                }
                Phase::Frames => {
                    if self.payload_left > 0 {
                        let n = self.payload_left.min(self.raw.len());
                        self.ready.extend(self.raw.drain(..n));
                        self.payload_left -= n;
                        if self.raw.is_empty() {
                            return;
                        }
                        continue;
                    }
                    if self.raw.len() < FRAME_HEADER {
                        return;
                    }
                    let len = usize::from(self.raw[0]) << 16
                        | usize::from(self.raw[1]) << 8
                        | usize::from(self.raw[2]);
                    let kind = self.raw[3];
                    let flags = self.raw[4];
                    let stream =
                        u32::from_be_bytes([self.raw[5], self.raw[6], self.raw[7], self.raw[8]])
                            & 0x7fff_ffff;
                    let header_frame = kind == HEADERS || kind == CONTINUATION;
                    if !header_frame {
                        if self.block.is_some() {
                            // A header block must not be interrupted; h2 says so.
                            self.give_up(stream, "frame inside a header block".into(), events);
                            continue;
                        }
                        self.ready.extend(self.raw.drain(..FRAME_HEADER));
                        self.payload_left = len;
                        continue;
                    }
                    if len > MAX_FRAME {
                        self.give_up(stream, format!("{len}-byte header frame"), events);
                        continue;
                    }
                    if self.raw.len() < FRAME_HEADER + len {
                        return;
                    }
                    let frame: Vec<u8> = self.raw.drain(..FRAME_HEADER + len).collect();
                    if let Err(why) = self.header_frame(kind, flags, stream, frame, events) {
                        self.give_up(stream, why, events);
                    }
                }
            }
        }
    }

    /// Collects one HEADERS or CONTINUATION frame; at END_HEADERS handles the block.
    fn header_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        frame: Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<(), String> {
        let payload = &frame[FRAME_HEADER..];
        if kind == HEADERS {
            if self.block.is_some() {
                return Err("HEADERS inside a header block".into());
            }
            let mut start = 0;
            let mut end = payload.len();
            if flags & PADDED != 0 {
                let pad = usize::from(*payload.first().ok_or("padded HEADERS without length")?);
                start = 1;
                end = end
                    .checked_sub(pad)
                    .ok_or("HEADERS padding longer than the frame")?;
            }
            let mut priority = None;
            if flags & PRIORITY != 0 {
                let fields: [u8; 5] = payload
                    .get(start..start + 5)
                    .and_then(|p| p.try_into().ok())
                    .ok_or("HEADERS too short for its priority")?;
                priority = Some(fields);
                start += 5;
            }
            let fragment = payload
                .get(start..end)
                .ok_or("HEADERS padding longer than the frame")?
                .to_vec();
            self.block = Some(Block {
                stream,
                end_stream: flags & END_STREAM != 0,
                priority,
                raw: frame,
                fragment,
            });
        } else {
            let block = self
                .block
                .as_mut()
                .filter(|b| b.stream == stream)
                .ok_or("CONTINUATION outside its header block")?;
            block.fragment.extend_from_slice(payload);
            block.raw.extend_from_slice(&frame);
        }
        if flags & END_HEADERS != 0 {
            let block = self.block.take().ok_or("no header block")?;
            if let Err(why) = self.block_done(&block, events) {
                // give_up passes the block on as received
                self.block = Some(block);
                return Err(why);
            }
        }
        Ok(())
    }

    /// Decodes a complete header block, fixes `:authority` if h2 would refuse it, and
    /// queues the block for h2 (unchanged, or re-encoded).
    fn block_done(&mut self, block: &Block, events: &mut Vec<Event>) -> Result<(), String> {
        let decoder = self.decoder.get_or_insert_with(|| {
            let mut d = Decoder::new();
            d.set_max_allowed_table_size(TABLE_SIZE);
            d
        });
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        decoder
            .decode_with_cb(&block.fragment, |name, value| {
                headers.push((name.into_owned(), value.into_owned()));
            })
            .map_err(|e| format!("HPACK: {e}"))?;
        let mut rewrote = None;
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority" && !acceptable_authority(value) {
                rewrote = Some(std::mem::replace(value, AUTHORITY.to_vec()));
            }
        }
        if let Some(authority) = rewrote {
            events.push(Event::Rewrote {
                stream: block.stream,
                authority,
            });
        } else if self.encoder.is_none() {
            self.ready.extend_from_slice(&block.raw);
            return Ok(());
        }
        let mut fragment = Vec::new();
        let encoder = match self.encoder.as_mut() {
            Some(e) => e,
            None => {
                // h2's table holds what the client's blocks so far inserted; empty it so
                // that it matches the fresh encoder (size 0, then back to the default).
                fragment.push(0x20);
                size_update(TABLE_SIZE, &mut fragment);
                self.encoder.insert(Encoder::new())
            }
        };
        encoder
            .encode_into(
                headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
                &mut fragment,
            )
            .map_err(|e| format!("HPACK encode: {e}"))?;
        write_header_frames(block, &fragment, &mut self.ready);
        Ok(())
    }
}

/// Whether h2 takes `value` as `:authority` (it parses it with this same function).
pub fn acceptable_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// A dynamic table size update to `size` (RFC 7541 6.3), after its first byte's prefix.
fn size_update(size: usize, out: &mut Vec<u8>) {
    // 5-bit prefix integer (RFC 7541 5.1); the first byte already carries 0b001 in `out`.
    let last = out.len() - 1;
    if size < 31 {
        out[last] |= size as u8;
        return;
    }
    out[last] |= 31;
    let mut rest = size - 31;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// Writes `fragment` as a HEADERS frame (with the block's END_STREAM and priority) and as
/// many CONTINUATION frames as [`MAX_FRAME`] requires.
fn write_header_frames(block: &Block, fragment: &[u8], out: &mut Vec<u8>) {
    let prio_len = if block.priority.is_some() { 5 } else { 0 };
    let first = fragment.len().min(MAX_FRAME - prio_len);
    let (head, mut rest) = fragment.split_at(first);
    let mut flags = if block.end_stream { END_STREAM } else { 0 };
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    frame_header(head.len() + prio_len, HEADERS, flags, block.stream, out);
    if let Some(p) = block.priority {
        out.extend_from_slice(&p);
    }
    out.extend_from_slice(head);
    while !rest.is_empty() {
        let n = rest.len().min(MAX_FRAME);
        let (chunk, tail) = rest.split_at(n);
        let flags = if tail.is_empty() { END_HEADERS } else { 0 };
        frame_header(chunk.len(), CONTINUATION, flags, block.stream, out);
        out.extend_from_slice(chunk);
        rest = tail;
    }
}

fn frame_header(len: usize, kind: u8, flags: u8, stream: u32, out: &mut Vec<u8>) {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

/// A refusal seen on the server-to-client side.
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    /// RST_STREAM or GOAWAY.
    frame: &'static str,
    /// The reset stream (RST_STREAM) or the last stream processed (GOAWAY).
    stream: u32,
    code: u32,
    /// GOAWAY debug data (lossy UTF-8, at most [`GOAWAY_DEBUG_MAX`] bytes).
    detail: String,
}

/// The server-to-client side: watches frame boundaries for RST_STREAM and GOAWAY.
#[derive(Debug, Default)]
struct Outbound {
    header: [u8; FRAME_HEADER],
    header_len: usize,
    kind: u8,
    stream: u32,
    payload_left: usize,
    /// The start of a watched frame's payload.
    watched: Vec<u8>,
    watch_len: usize,
}

impl Outbound {
    /// Follows `data`, which h2 has just written, and returns the refusals in it.
    fn scan(&mut self, mut data: &[u8], out: &mut Vec<Refusal>) {
        while !data.is_empty() {
            if self.header_len < FRAME_HEADER {
                let n = (FRAME_HEADER - self.header_len).min(data.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
                self.header_len += n;
                data = &data[n..];
                if self.header_len < FRAME_HEADER {
                    return;
                }
                let h = &self.header;
                self.payload_left =
                    usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                self.kind = h[3];
                self.stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                self.watched.clear();
                self.watch_len = match self.kind {
                    RST_STREAM => 4.min(self.payload_left),
                    GOAWAY => (8 + GOAWAY_DEBUG_MAX).min(self.payload_left),
                    _ => 0,
                };
                self.frame_maybe_done(out);
                continue;
            }
            let n = self.payload_left.min(data.len());
            let want = self.watch_len - self.watched.len();
            self.watched.extend_from_slice(&data[..n.min(want)]);
            self.payload_left -= n;
            data = &data[n..];
            self.frame_maybe_done(out);
        }
    }

    fn frame_maybe_done(&mut self, out: &mut Vec<Refusal>) {
        if self.payload_left > 0 {
            return;
        }
        self.header_len = 0;
        let w = &self.watched;
        let refusal = match self.kind {
            RST_STREAM if w.len() >= 4 => Some(Refusal {
                frame: "RST_STREAM",
                stream: self.stream,
                code: u32::from_be_bytes([w[0], w[1], w[2], w[3]]),
                detail: String::new(),
            }),
            GOAWAY if w.len() >= 8 => Some(Refusal {
                frame: "GOAWAY",
                stream: u32::from_be_bytes([w[0], w[1], w[2], w[3]]) & 0x7fff_ffff,
                code: u32::from_be_bytes([w[4], w[5], w[6], w[7]]),
                detail: String::from_utf8_lossy(&w[8..]).into_owned(),
            }),
            _ => None,
        };
        // NO_ERROR is a graceful close; CANCEL answers a client that gave up.
        if let Some(r) = refusal.filter(|r| r.code != 0x0 && r.code != 0x8) {
            out.push(r);
        }
    }
}

/// The RFC 9113 name of an HTTP/2 error code.
fn error_name(code: u32) -> String {
    let name = match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        other => return format!("error code {other:#x}"),
    };
    name.to_string()
}

impl<S> H2Front<S> {
    fn log_inbound(&self, events: Vec<Event>) {
        for e in events {
            match e {
                Event::Rewrote { stream, authority } => debug!(
                    socket = %self.socket,
                    stream,
                    authority = %String::from_utf8_lossy(&authority),
                    "HTTP/2 :authority that h2 refuses replaced with localhost"
                ),
                Event::GaveUp { stream, why } => warn!(
                    socket = %self.socket,
                    stream,
                    "HTTP/2 request stream not understood ({why}); passed to h2 unchanged"
                ),
            }
        }
    }

    fn log_outbound(&self, refusals: Vec<Refusal>) {
        for r in refusals {
            warn!(
                socket = %self.socket,
                stream = r.stream,
                code = %error_name(r.code),
                detail = %r.detail,
                "HTTP/2 layer refused the request before any gRPC service saw it: {} {}",
                r.frame,
                error_name(r.code)
            );
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for H2Front<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.rx.has_ready() {
                let chunk = this.rx.take_ready(buf.remaining());
                buf.put_slice(chunk);
                return Poll::Ready(Ok(()));
            }
            if this.rx.eof {
                return Poll::Ready(Ok(()));
            }
            if this.rx.phase == Phase::Passthrough && this.rx.raw.is_empty() {
                // Nothing to look at any more: read straight into the caller's buffer.
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut tmp = [0u8; 8192];
            let mut chunk = ReadBuf::new(&mut tmp);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
            if chunk.filled().is_empty() {
                this.rx.finish();
                continue;
            }
            let mut events = Vec::new();
            this.rx.feed(chunk.filled(), &mut events);
            if !events.is_empty() {
                this.log_inbound(events);
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for H2Front<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        let mut refusals = Vec::new();
        this.tx.scan(&buf[..n], &mut refusals);
        if !refusals.is_empty() {
            this.log_outbound(refusals);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut refusals = Vec::new();
        let mut left = n;
        for b in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(b.len());
            this.tx.scan(&b[..take], &mut refusals);
            left -= take;
        }
        if !refusals.is_empty() {
            this.log_outbound(refusals);
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type HeaderList = Vec<(Vec<u8>, Vec<u8>)>;

    fn headers(list: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        list.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    fn request(authority: Option<&str>, path: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut h = headers(&[(":method", "POST"), (":scheme", "http"), (":path", path)]);
        if let Some(a) = authority {
            h.push((b":authority".to_vec(), a.as_bytes().to_vec()));
        }
        h.extend(headers(&[
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]));
        h
    }

    /// A client: preface, SETTINGS, then one HEADERS (+DATA) per request, encoded with
    /// one encoder as a real client's would be.
    struct Client {
        enc: Encoder<'static>,
        bytes: Vec<u8>,
        next_stream: u32,
    }

    impl Client {
        fn new() -> Self {
            let mut bytes = PREFACE.to_vec();
            frame_header(0, 0x4, 0, 0, &mut bytes); // empty SETTINGS
            Self {
                enc: Encoder::new(),
                bytes,
                next_stream: 1,
            }
        }

        fn send(&mut self, h: &[(Vec<u8>, Vec<u8>)], data: &[u8]) -> u32 {
            let stream = self.next_stream;
            self.next_stream += 2;
            let block = self
                .enc
                .encode(h.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
            frame_header(block.len(), HEADERS, END_HEADERS, stream, &mut self.bytes);
            self.bytes.extend_from_slice(&block);
            frame_header(data.len(), 0x0, END_STREAM, stream, &mut self.bytes);
            self.bytes.extend_from_slice(data);
            stream
        }
    }

    /// Feeds `bytes` in chunks of `chunk` and returns what h2 would read, plus events.
    fn through(bytes: &[u8], chunk: usize) -> (Vec<u8>, Vec<Event>) {
        let mut rx = Inbound::default();
        let mut events = Vec::new();
        let mut out = Vec::new();
        for c in bytes.chunks(chunk) {
            rx.feed(c, &mut events);
            while rx.has_ready() {
                out.extend_from_slice(rx.take_ready(usize::MAX));
            }
        }
        rx.finish();
        out.extend_from_slice(rx.take_ready(usize::MAX));
        (out, events)
    }

    /// Decodes `bytes` the way h2 does (one decoder for the connection): the header lists
    /// of each stream, and the DATA payloads.
    fn as_server_sees(bytes: &[u8]) -> (Vec<(u32, HeaderList)>, Vec<Vec<u8>>) {
        assert_eq!(&bytes[..24], PREFACE);
        let mut dec = Decoder::new();
        let mut rest = &bytes[24..];
        let mut blocks = Vec::new();
        let mut data = Vec::new();
        let mut pending: Option<(u32, Vec<u8>)> = None;
        while !rest.is_empty() {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
            let payload = &rest[9..9 + len];
            assert!(len <= MAX_FRAME, "frame of {len} bytes");
            match kind {
                HEADERS => {
                    assert!(pending.is_none());
                    let skip = if flags & PRIORITY != 0 { 5 } else { 0 };
                    pending = Some((stream, payload[skip..].to_vec()));
                }
                CONTINUATION => pending.as_mut().unwrap().1.extend_from_slice(payload),
                0x0 => data.push(payload.to_vec()),
                _ => {}
            }
            if (kind == HEADERS || kind == CONTINUATION) && flags & END_HEADERS != 0 {
                let (s, frag) = pending.take().unwrap();
                blocks.push((s, dec.decode(&frag).unwrap()));
            }
            rest = &rest[9 + len..];
        }
        (blocks, data)
    }

    #[test]
    fn valid_authorities_pass_byte_for_byte() {
        let mut c = Client::new();
        c.send(
            &request(Some("localhost"), "/v1beta1.DevicePlugin/Allocate"),
            b"ab",
        );
        c.send(
            &request(Some("rdma_hca.sock"), "/v1beta1.DevicePlugin/Allocate"),
            b"",
        );
        c.send(
            &request(None, "/pluginregistration.Registration/GetInfo"),
            b"xyz",
        );
        for chunk in [1, 7, 4096] {
            let (out, events) = through(&c.bytes, chunk);
            assert_eq!(out, c.bytes, "chunk {chunk}");
            assert!(events.is_empty(), "{events:?}");
        }
    }

    #[test]
    fn socket_paths_become_localhost_and_the_tables_stay_in_step() {
        let raw = "/var/lib/kubelet/plugins_registry/rdma_vhca.sock";
        let encoded = "%2Fvar%2Flib%2Fkubelet%2Fplugins_registry%2Frdma_vhca.sock";
        assert!(!acceptable_authority(raw.as_bytes()));
        assert!(!acceptable_authority(encoded.as_bytes()));
        assert!(!acceptable_authority(b""));
        // Valid first (passed raw, filling both tables), then the bad ones (rewritten),
        // then valid and repeated ones again (re-encoded, indexed against our encoder).
        let sent = [
            request(
                Some("localhost"),
                "/v1beta1.DevicePlugin/GetDevicePluginOptions",
            ),
            request(Some(raw), "/pluginregistration.Registration/GetInfo"),
            request(
                Some(encoded),
                "/pluginregistration.Registration/NotifyRegistrationStatus",
            ),
            request(Some(""), "/v1beta1.DevicePlugin/ListAndWatch"),
            request(Some("localhost"), "/v1beta1.DevicePlugin/Allocate"),
            request(Some(raw), "/v1beta1.DevicePlugin/Allocate"),
        ];
        let mut c = Client::new();
        for (i, h) in sent.iter().enumerate() {
            c.send(h, format!("body{i}").as_bytes());
        }
        for chunk in [1, 5, 100, 1 << 16] {
            let (out, events) = through(&c.bytes, chunk);
            let (blocks, data) = as_server_sees(&out);
            assert_eq!(blocks.len(), sent.len());
            for (i, ((stream, got), want)) in blocks.iter().zip(&sent).enumerate() {
                assert_eq!(*stream, 1 + 2 * i as u32);
                let mut want = want.clone();
                for (n, v) in &mut want {
                    if n.as_slice() == b":authority" && !acceptable_authority(v) {
                        *v = b"localhost".to_vec();
                    }
                }
                assert_eq!(got, &want, "block {i}, chunk {chunk}");
            }
            let bodies: Vec<_> = (0..sent.len())
                .map(|i| format!("body{i}").into_bytes())
                .collect();
            assert_eq!(data, bodies);
            let rewritten: Vec<u32> = events
                .iter()
                .map(|e| match e {
                    Event::Rewrote { stream, .. } => *stream,
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(rewritten, [3, 5, 7, 11]);
        }
    }

    #[test]
    fn padded_prioritised_and_continued_blocks_are_rewritten() {
        let h = request(
            Some("/tmp/x/rdma_hca.sock"),
            "/v1beta1.DevicePlugin/Allocate",
        );
        let block = Encoder::new().encode(h.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let (a, b) = block.split_at(block.len() / 2);
        let mut bytes = PREFACE.to_vec();
        // HEADERS: padded (3 bytes) and with priority, END_STREAM, no END_HEADERS.
        frame_header(
            1 + 5 + a.len() + 3,
            HEADERS,
            PADDED | PRIORITY | END_STREAM,
            1,
            &mut bytes,
        );
        bytes.push(3);
        bytes.extend_from_slice(&[0, 0, 0, 0, 16]);
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(&[0, 0, 0]);
        frame_header(b.len(), CONTINUATION, END_HEADERS, 1, &mut bytes);
        bytes.extend_from_slice(b);
        let (out, events) = through(&bytes, 3);
        assert_eq!(events.len(), 1, "{events:?}");
        let (blocks, _) = as_server_sees(&out);
        let authority = blocks[0]
            .1
            .iter()
            .find(|(n, _)| n == b":authority")
            .unwrap();
        assert_eq!(authority.1, b"localhost");
        // END_STREAM and priority survive; padding is gone.
        assert_eq!(out[24 + 4], END_STREAM | PRIORITY | END_HEADERS);
        assert_eq!(&out[24 + 9..24 + 14], &[0, 0, 0, 0, 16]);
    }

    #[test]
    fn large_rewritten_blocks_are_split_into_continuations() {
        let mut h = request(Some("/a/b.sock"), "/v1beta1.DevicePlugin/Allocate");
        h.push((b"x-big".to_vec(), vec![b'v'; 40_000]));
        // The client itself must split it too.
        let block = Encoder::new().encode(h.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut bytes = PREFACE.to_vec();
        let chunks: Vec<&[u8]> = block.chunks(MAX_FRAME).collect();
        for (i, c) in chunks.iter().enumerate() {
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            let flags = if i + 1 == chunks.len() {
                END_HEADERS
            } else {
                0
            };
            frame_header(c.len(), kind, flags, 1, &mut bytes);
            bytes.extend_from_slice(c);
        }
        let (out, _) = through(&bytes, 1000);
        let (blocks, _) = as_server_sees(&out);
        assert_eq!(blocks.len(), 1);
        let got = &blocks[0].1;
        assert!(
            got.iter()
                .any(|(n, v)| n == b":authority" && v == b"localhost")
        );
        assert!(got.iter().any(|(n, v)| n == b"x-big" && v.len() == 40_000));
    }

    #[test]
    fn what_it_cannot_parse_goes_to_h2_unchanged() {
        // Not HTTP/2 at all.
        let junk = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let (out, events) = through(&junk, 4);
        assert_eq!(out, junk);
        assert!(
            matches!(events.as_slice(), [Event::GaveUp { .. }]),
            "{events:?}"
        );
        // A header block that is not valid HPACK (index 70 into an empty table).
        let mut bytes = PREFACE.to_vec();
        frame_header(1, HEADERS, END_HEADERS, 1, &mut bytes);
        bytes.push(0x80 | 70);
        frame_header(2, 0x0, END_STREAM, 1, &mut bytes);
        bytes.extend_from_slice(b"hi");
        let (out, events) = through(&bytes, 2);
        assert_eq!(out, bytes);
        match events.as_slice() {
            [Event::GaveUp { stream: 1, why }] => assert!(why.contains("HPACK"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_are_seen_across_write_boundaries() {
        let mut bytes = Vec::new();
        frame_header(0, 0x4, 0, 0, &mut bytes); // SETTINGS
        frame_header(4, RST_STREAM, 0, 3, &mut bytes);
        bytes.extend_from_slice(&1u32.to_be_bytes()); // PROTOCOL_ERROR
        frame_header(4, RST_STREAM, 0, 5, &mut bytes);
        bytes.extend_from_slice(&8u32.to_be_bytes()); // CANCEL: not a refusal
        frame_header(5, 0x0, 0, 7, &mut bytes);
        bytes.extend_from_slice(&[0, 0, 0, 0, 3]); // DATA that looks like nothing
        frame_header(8 + 5, GOAWAY, 0, 0, &mut bytes);
        bytes.extend_from_slice(&7u32.to_be_bytes());
        bytes.extend_from_slice(&9u32.to_be_bytes()); // COMPRESSION_ERROR
        bytes.extend_from_slice(b"hpack");
        frame_header(8, GOAWAY, 0, 0, &mut bytes);
        bytes.extend_from_slice(&[0; 8]); // graceful
        for chunk in [1, 2, 9, 1000] {
            let mut tx = Outbound::default();
            let mut got = Vec::new();
            for c in bytes.chunks(chunk) {
                tx.scan(c, &mut got);
            }
            assert_eq!(
                got,
                [
                    Refusal {
                        frame: "RST_STREAM",
                        stream: 3,
                        code: 1,
                        detail: String::new()
                    },
                    Refusal {
                        frame: "GOAWAY",
                        stream: 7,
                        code: 9,
                        detail: "hpack".into()
                    },
                ],
                "chunk {chunk}"
            );
        }
        assert_eq!(error_name(1), "PROTOCOL_ERROR");
        assert_eq!(error_name(0x42), "error code 0x42");
    }

    #[test]
    fn size_update_encodes_4096_as_rfc7541_does() {
        let mut out = vec![0x20];
        size_update(4096, &mut out);
        assert_eq!(out, [0x3f, 0xe1, 0x1f]);
        let mut out = vec![0x20];
        size_update(0, &mut out);
        assert_eq!(out, [0x20]);
    }
}

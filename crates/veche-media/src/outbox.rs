//! Datagrams of one pass, sent together: one `sendmmsg` per socket for up to [`BATCH`] of
//! them, instead of one `sendto` each, and a run of equal-sized datagrams to one destination
//! (a frame's packets to one viewer, a keyframe burst) as one send the kernel cuts up (UDP
//! GSO). nix's safe wrappers: the workspace forbids `unsafe`.

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::socket::{
    sendmmsg, sendmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};
use str0m::net::{Protocol, Transmit};
use tokio::net::UdpSocket;

use crate::net::TcpConns;

/// Most datagrams per system call (what the kernel takes at once is UIO_MAXIOV, 1024).
pub(crate) const BATCH: usize = 64;

/// What `flush` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flushed {
    pub sent: u64,
    /// A full socket buffer, as a congested link would: dropped, not retried later.
    pub dropped: u64,
    pub syscalls: u64,
}

impl std::ops::AddAssign for Flushed {
    fn add_assign(&mut self, other: Flushed) {
        self.sent += other.sent;
        self.dropped += other.dropped;
        self.syscalls += other.syscalls;
    }
}

/// Datagrams waiting for the end of the pass, their bytes in one buffer.
#[derive(Default)]
pub(crate) struct Outbox {
    bytes: Vec<u8>,
    /// (socket, destination, start in `bytes`, length), in the order they were made.
    items: Vec<Item>,
    /// A send refused segmentation offload (a path without checksum offload): this outbox
    /// sends one by one from then on.
    no_gso: bool,
    /// Packets for ICE-TCP connections: (local, remote, bytes).
    streams: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// (local, remote) of TCP packets that found no connection, since the last
    /// [`Outbox::take_unconnected`] (a few: they are dialled, where that is ours to do).
    unconnected: Vec<(SocketAddr, SocketAddr)>,
}

/// Unconnected pairs kept between takes.
const MAX_UNCONNECTED: usize = 16;

impl Outbox {
    pub fn push(&mut self, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        self.items.push((source, destination, start, data.len()));
    }

    /// What a peer transmits: a datagram, or a packet for its ICE-TCP connection.
    pub fn push_transmit(&mut self, t: &Transmit) {
        match t.proto {
            Protocol::Udp => self.push(t.source, t.destination, &t.contents),
            _ => self
                .streams
                .push((t.source, t.destination, t.contents.to_vec())),
        }
    }

    /// The (local, remote) pairs whose TCP packets found no connection since the last take.
    pub fn take_unconnected(&mut self) -> Vec<(SocketAddr, SocketAddr)> {
        std::mem::take(&mut self.unconnected)
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.streams.is_empty()
    }

    /// Hand every datagram to `send` (socket, destination, bytes), in order, and empty the
    /// box: for a driver that is not a socket (a simulated network, which has no TCP).
    pub fn drain(&mut self, mut send: impl FnMut(SocketAddr, SocketAddr, &[u8])) {
        for (source, destination, start, len) in self.items.drain(..) {
            send(source, destination, &self.bytes[start..start + len]);
        }
        self.bytes.clear();
        self.streams.clear();
    }

    /// Send everything, in order per socket and per connection, and empty the box.
    pub fn flush(
        &mut self,
        sockets: &HashMap<SocketAddr, Arc<UdpSocket>>,
        conns: &TcpConns,
    ) -> Flushed {
        let mut done = Flushed::default();
        for (local, remote, packet) in self.streams.drain(..) {
            match conns.get(&(local, remote)).map(|c| c.try_send(packet)) {
                Some(Ok(())) => done.sent += 1,
                Some(Err(_)) => done.dropped += 1,
                None => {
                    done.dropped += 1;
                    let pair = (local, remote);
                    if self.unconnected.len() < MAX_UNCONNECTED && !self.unconnected.contains(&pair)
                    {
                        self.unconnected.push(pair);
                    }
                }
            }
        }
        let mut items = std::mem::take(&mut self.items);
        // Grouped by socket (a node usually sends from one), in order within each.
        items.sort_by_key(|(source, ..)| *source);
        let mut headers: Option<MultiHeaders<SockaddrStorage>> = None;
        for group in items.chunk_by(|a, b| a.0 == b.0) {
            let Some(socket) = sockets.get(&group[0].0) else {
                done.dropped += group.len() as u64;
                continue;
            };
            let fd = socket.as_raw_fd();
            let run_at = |i: usize, gso: bool| if gso { gso_run(&group[i..]) } else { 1 };
            let mut i = 0;
            while i < group.len() {
                let run = run_at(i, !self.no_gso);
                if run >= 2 {
                    let part = &group[i..i + run];
                    let gso = send_segments(fd, &self.bytes, part, &mut done);
                    if gso != Gso::Done {
                        if gso == Gso::Unsupported {
                            tracing::info!(
                                "UDP segmentation offload refused: datagrams go one by one"
                            );
                            self.no_gso = true;
                        }
                        let headers =
                            headers.get_or_insert_with(|| MultiHeaders::preallocate(BATCH, None));
                        send_batch(fd, headers, &self.bytes, part, &mut done);
                    }
                    i += run;
                    continue;
                }
                // Single datagrams up to the next run, in one call per BATCH.
                let mut j = i + 1;
                while j < group.len() && j - i < BATCH && run_at(j, !self.no_gso) < 2 {
                    j += 1;
                }
                let headers = headers.get_or_insert_with(|| MultiHeaders::preallocate(BATCH, None));
                send_batch(fd, headers, &self.bytes, &group[i..j], &mut done);
                i = j;
            }
        }
        self.bytes.clear();
        items.clear();
        self.items = items;
        done
    }
}

/// One datagram waiting: (socket, destination, start in the bytes, length).
type Item = (SocketAddr, SocketAddr, usize, usize);

/// Most segments in one offloaded send (the kernel's UDP_MAX_SEGMENTS).
const MAX_SEGMENTS: usize = 64;
/// Most bytes in one offloaded send (an IPv4 datagram's payload, with room to spare).
const MAX_SEGMENTED_BYTES: usize = 65_000;

/// How many of `items`, from the first, can leave as one send the kernel cuts into
/// datagrams (UDP GSO): the same destination, the same length, except that the last may be
/// shorter. 1 when only the first can.
fn gso_run(items: &[Item]) -> usize {
    let Some(&(_, destination, _, size)) = items.first() else {
        return 0;
    };
    let (mut n, mut total) = (1, size);
    for &(_, d, _, len) in &items[1..] {
        if d != destination || len > size || n >= MAX_SEGMENTS || total + len > MAX_SEGMENTED_BYTES
        {
            break;
        }
        n += 1;
        total += len;
        if len < size {
            break;
        }
    }
    n
}

#[derive(Debug, PartialEq, Eq)]
enum Gso {
    Done,
    /// The path cannot segment (no checksum offload): send them one by one, and no more
    /// runs from this outbox.
    Unsupported,
    /// Not this run (its segments exceed the route's MTU): send it one by one.
    NotThisRun,
}

/// Send `run` (see [`gso_run`]) in one call, the kernel cutting it into its datagrams.
fn send_segments(fd: std::os::fd::RawFd, bytes: &[u8], run: &[Item], done: &mut Flushed) -> Gso {
    let slices: Vec<IoSlice<'_>> = run
        .iter()
        .map(|(_, _, start, len)| IoSlice::new(&bytes[*start..start + len]))
        .collect();
    let size = run[0].3 as u16;
    let cmsg = [ControlMessage::UdpGsoSegments(&size)];
    let to = SockaddrStorage::from(run[0].1);
    for _ in 0..2 {
        done.syscalls += 1;
        match sendmsg(fd, &slices, &cmsg, MsgFlags::empty(), Some(&to)) {
            Ok(_) => {
                done.sent += run.len() as u64;
                return Gso::Done;
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EIO | Errno::EOPNOTSUPP | Errno::ENOPROTOOPT) => return Gso::Unsupported,
            // Segments larger than this route's MTU: these go one by one (fragmented, as
            // they would have been), offload stays on for the others.
            Err(Errno::EINVAL | Errno::EMSGSIZE) => return Gso::NotThisRun,
            // A full buffer, as a congested link, or a bad destination: dropped.
            Err(e) => {
                tracing::debug!(error = %e, "segmented send failed");
                break;
            }
        }
    }
    done.dropped += run.len() as u64;
    Gso::Done
}

/// Send `chunk` (at most [`BATCH`]) with `sendmmsg`, in order.
fn send_batch(
    fd: std::os::fd::RawFd,
    headers: &mut MultiHeaders<SockaddrStorage>,
    bytes: &[u8],
    chunk: &[Item],
    done: &mut Flushed,
) {
    let mut rest = chunk;
    // Bounded: a call sends or skips at least one datagram (an interrupted one is tried
    // again, within the bound), or the buffer is full and the rest of the chunk is dropped.
    for _ in 0..2 * BATCH {
        if rest.is_empty() {
            break;
        }
        let slices: Vec<[IoSlice<'_>; 1]> = rest
            .iter()
            .map(|(_, _, start, len)| [IoSlice::new(&bytes[*start..start + len])])
            .collect();
        let addrs: Vec<Option<SockaddrStorage>> = rest
            .iter()
            .map(|(_, dest, ..)| Some(SockaddrStorage::from(*dest)))
            .collect();
        done.syscalls += 1;
        match sendmmsg(fd, headers, &slices, &addrs, [], MsgFlags::empty()) {
            Ok(results) => {
                let sent = results.count();
                if sent == 0 {
                    break;
                }
                done.sent += sent as u64;
                rest = &rest[sent..];
            }
            Err(Errno::EINTR) => {}
            // A full socket buffer, as a congested link: the rest is dropped.
            Err(Errno::EAGAIN | Errno::ENOBUFS) => break,
            Err(e) => {
                // Linux reports a datagram's error at the next call, that datagram first
                // (a bad destination): skip it, send the others.
                tracing::debug!(error = %e, "sendmmsg failed");
                done.dropped += 1;
                rest = &rest[1..];
            }
        }
    }
    done.dropped += rest.len() as u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(to: u16, len: usize) -> Item {
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let mut d = a;
        d.set_port(to);
        (a, d, 0, len)
    }

    #[test]
    fn a_run_is_one_destination_one_size_and_at_most_a_shorter_last() {
        let run = |items: &[Item]| gso_run(items);
        assert_eq!(run(&[]), 0);
        assert_eq!(run(&[item(9, 1000)]), 1);
        assert_eq!(
            run(&[item(9, 1000), item(9, 1000), item(9, 700), item(9, 1000)]),
            3
        );
        assert_eq!(
            run(&[item(9, 700), item(9, 1000)]),
            1,
            "a longer one ends it"
        );
        assert_eq!(
            run(&[item(9, 1000), item(8, 1000)]),
            1,
            "another destination"
        );
        let many = vec![item(9, 100); 100];
        assert_eq!(run(&many), MAX_SEGMENTS);
        let big = vec![item(9, 1200); 60];
        assert_eq!(run(&big), MAX_SEGMENTED_BYTES / 1200);
    }

    #[tokio::test]
    async fn a_run_to_one_viewer_leaves_in_one_call_and_arrives_as_its_datagrams() {
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let rx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let other = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (a_addr, to, to_other) = (
            a.local_addr().expect("addr"),
            rx.local_addr().expect("addr"),
            other.local_addr().expect("addr"),
        );
        let sockets: HashMap<SocketAddr, Arc<UdpSocket>> =
            [(a_addr, Arc::new(a))].into_iter().collect();
        let mut out = Outbox::default();
        // A keyframe's burst to one viewer (the last packet shorter), then three datagrams
        // of growing sizes to another.
        for n in 0..10u8 {
            out.push(a_addr, to, &[n; 1000]);
        }
        out.push(a_addr, to, &[10; 300]);
        for n in 1..=3u8 {
            out.push(a_addr, to_other, &vec![n; n as usize]);
        }
        let done = out.flush(&sockets, &TcpConns::new());
        assert_eq!((done.sent, done.dropped), (14, 0));
        assert_eq!(done.syscalls, 2, "one segmented send, one batch");
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        for _ in 0..11 {
            let (n, _) =
                tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv_from(&mut buf))
                    .await
                    .expect("in time")
                    .expect("recv");
            assert!(buf[..n].iter().all(|b| *b == buf[0]), "one datagram each");
            got.push((buf[0], n));
        }
        let want: Vec<(u8, usize)> = (0..10).map(|n| (n, 1000)).chain([(10, 300)]).collect();
        assert_eq!(got, want, "cut at the segment size, in order");
        for n in 1..=3u8 {
            let (len, _) =
                tokio::time::timeout(std::time::Duration::from_secs(5), other.recv_from(&mut buf))
                    .await
                    .expect("in time")
                    .expect("recv");
            assert_eq!((len, buf[0]), (n as usize, n));
        }
    }

    #[tokio::test]
    async fn a_pass_leaves_in_one_call_per_socket_and_batch_in_order() {
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let rx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (a_addr, b_addr, to) = (
            a.local_addr().expect("addr"),
            b.local_addr().expect("addr"),
            rx.local_addr().expect("addr"),
        );
        let sockets: HashMap<SocketAddr, Arc<UdpSocket>> =
            [(a_addr, Arc::new(a)), (b_addr, Arc::new(b))]
                .into_iter()
                .collect();
        let mut out = Outbox::default();
        // Each longer than the one before: no run to segment.
        for n in 0..100u8 {
            out.push(a_addr, to, &vec![n; n as usize + 1]);
        }
        out.push(b_addr, to, b"from b");
        let done = out.flush(&sockets, &TcpConns::new());
        assert_eq!((done.sent, done.dropped), (101, 0));
        assert_eq!(done.syscalls, 3, "two batches from a, one from b");
        assert!(out.is_empty());
        let mut buf = [0u8; 256];
        let mut from_a = Vec::new();
        let mut from_b = 0;
        for _ in 0..101 {
            let (n, src) =
                tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv_from(&mut buf))
                    .await
                    .expect("in time")
                    .expect("recv");
            if src == a_addr {
                assert_eq!(n, buf[0] as usize + 1);
                from_a.push(buf[0]);
            } else {
                assert_eq!(&buf[..n], b"from b");
                from_b += 1;
            }
        }
        assert_eq!(from_a, (0..100).collect::<Vec<u8>>(), "in order");
        assert_eq!(from_b, 1);
    }
}

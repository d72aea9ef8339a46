//! Datagrams of one pass, sent together: one `sendmmsg` per socket for up to [`BATCH`] of
//! them, instead of one `sendto` each (nix's safe wrapper; the workspace forbids `unsafe`).

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::socket::{sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use tokio::net::UdpSocket;

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
    items: Vec<(SocketAddr, SocketAddr, usize, usize)>,
}

impl Outbox {
    pub fn push(&mut self, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        self.items.push((source, destination, start, data.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Hand everything to `send` (socket, destination, bytes), in order, and empty the box:
    /// for a driver that is not a socket (a simulated network).
    pub fn drain(&mut self, mut send: impl FnMut(SocketAddr, SocketAddr, &[u8])) {
        for (source, destination, start, len) in self.items.drain(..) {
            send(source, destination, &self.bytes[start..start + len]);
        }
        self.bytes.clear();
    }

    /// Send everything, in order per socket, and empty the box.
    pub fn flush(&mut self, sockets: &HashMap<SocketAddr, Arc<UdpSocket>>) -> Flushed {
        let mut done = Flushed::default();
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
            for chunk in group.chunks(BATCH) {
                let headers = headers.get_or_insert_with(|| MultiHeaders::preallocate(BATCH, None));
                let mut rest = chunk;
                // Bounded: a call sends or skips at least one datagram (an interrupted one
                // is tried again, within the bound), or the buffer is full and the rest of
                // the chunk is dropped.
                for _ in 0..2 * BATCH {
                    if rest.is_empty() {
                        break;
                    }
                    let slices: Vec<[IoSlice<'_>; 1]> = rest
                        .iter()
                        .map(|(_, _, start, len)| [IoSlice::new(&self.bytes[*start..start + len])])
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
                            // Linux reports a datagram's error at the next call, that datagram
                            // first (a bad destination): skip it, send the others.
                            tracing::debug!(error = %e, "sendmmsg failed");
                            done.dropped += 1;
                            rest = &rest[1..];
                        }
                    }
                }
                done.dropped += rest.len() as u64;
            }
        }
        self.bytes.clear();
        items.clear();
        self.items = items;
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for n in 0..100u8 {
            out.push(a_addr, to, &[n; 3]);
        }
        out.push(b_addr, to, b"from b");
        let done = out.flush(&sockets);
        assert_eq!((done.sent, done.dropped), (101, 0));
        assert_eq!(done.syscalls, 3, "two batches from a, one from b");
        assert!(out.is_empty());
        let mut buf = [0u8; 16];
        let mut from_a = Vec::new();
        let mut from_b = 0;
        for _ in 0..101 {
            let (n, src) =
                tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv_from(&mut buf))
                    .await
                    .expect("in time")
                    .expect("recv");
            if src == a_addr {
                assert_eq!(n, 3);
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

//! Sockets: the media port on every local address.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// One received datagram and the local address it arrived on.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub data: Vec<u8>,
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

/// The machine's IPv4 addresses that can carry media: loopback and every interface address
/// except link-local ones (which ICE refuses).
pub fn local_ipv4_addresses() -> Vec<Ipv4Addr> {
    let mut out = vec![Ipv4Addr::LOCALHOST];
    match if_addrs::get_if_addrs() {
        Ok(ifs) => {
            for i in ifs {
                if let IpAddr::V4(v4) = i.ip() {
                    if !v4.is_loopback() && !v4.is_link_local() && !out.contains(&v4) {
                        out.push(v4);
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot list network interfaces; media on loopback only")
        }
    }
    out
}

/// Bind `port` on each address. With port 0 the first socket picks a port and the others
/// take the same one, so the node still has one media port.
pub(crate) async fn bind_all(
    addresses: &[Ipv4Addr],
    port: u16,
) -> io::Result<Vec<(SocketAddr, Arc<UdpSocket>)>> {
    let mut port = port;
    let mut out = Vec::new();
    let mut last_err = None;
    for ip in addresses {
        match UdpSocket::bind(SocketAddr::new(IpAddr::V4(*ip), port)).await {
            Ok(s) => {
                let local = s.local_addr()?;
                port = local.port();
                out.push((local, Arc::new(s)));
            }
            Err(e) => {
                tracing::warn!(%ip, port, error = %e, "cannot bind the media port on this address");
                last_err = Some(e);
            }
        }
    }
    if out.is_empty() {
        return Err(last_err
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no address")));
    }
    Ok(out)
}

/// Read datagrams from `socket` into the engine's queue until the engine stops.
pub(crate) async fn read_loop(
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    tx: mpsc::Sender<Datagram>,
    dropped: Arc<AtomicU64>,
) {
    // Larger than any datagram WebRTC sends (MTU-sized), so nothing is truncated.
    let mut buf = vec![0u8; 2048];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, source)) => {
                let d = Datagram {
                    data: buf[..n].to_vec(),
                    source,
                    destination: local,
                };
                match tx.try_send(d) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            // ICMP port unreachable from a peer that went away shows up as an error on
            // the next receive; it concerns that peer only.
            Err(e) => tracing::debug!(%local, error = %e, "media socket receive error"),
        }
    }
}

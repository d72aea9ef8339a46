//! Sockets: the media port on every local address, UDP and (for browsers and node links
//! whose UDP is blocked) TCP: accepted on the media port, and dialled for a node link's
//! active candidate.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use str0m::net::Protocol;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// One received packet (a UDP datagram, or a frame of an ICE-TCP connection) and the local
/// address it arrived on.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub data: Vec<u8>,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub proto: Protocol,
}

/// An ICE-TCP connection opened or closed: the driver keeps where each one's packets go.
#[derive(Debug)]
pub(crate) enum TcpEvent {
    Opened {
        local: SocketAddr,
        remote: SocketAddr,
        tx: mpsc::Sender<Vec<u8>>,
    },
    Closed {
        local: SocketAddr,
        remote: SocketAddr,
    },
}

/// Where every ICE-TCP connection's packets and news go, and the slots they take.
#[derive(Clone)]
pub(crate) struct TcpPlumbing {
    pub tx: mpsc::Sender<Datagram>,
    pub events: mpsc::Sender<TcpEvent>,
    pub dropped: Arc<AtomicU64>,
    pub open: Arc<TcpOpen>,
}

/// (local, remote) of an ICE-TCP connection → its writer's queue.
pub(crate) type TcpConns =
    std::collections::HashMap<(SocketAddr, SocketAddr), mpsc::Sender<Vec<u8>>>;

/// ICE-TCP connections open at once, in all and from one address (a browser opens one per
/// candidate pair: a few), so one host cannot take every slot.
const MAX_TCP_CONNECTIONS: usize = 256;
const MAX_TCP_PER_IP: usize = 16;

/// The ICE-TCP connections open now, per remote address.
#[derive(Debug, Default)]
pub(crate) struct TcpOpen(Mutex<HashMap<IpAddr, usize>>);

impl TcpOpen {
    /// Take a slot for a connection from `ip`, if there is one.
    fn take(&self, ip: IpAddr) -> bool {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = open.values().sum();
        let mine = open.get(&ip).copied().unwrap_or(0);
        if total >= MAX_TCP_CONNECTIONS || mine >= MAX_TCP_PER_IP {
            return false;
        }
        open.insert(ip, mine + 1);
        true
    }

    fn give_back(&self, ip: IpAddr) {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }
}
/// The largest frame taken: WebRTC's packets are MTU-sized; more is not ours.
const TCP_FRAME_MAX: usize = 4096;
/// A connection that brings nothing this long is closed (a browser's consent checks come
/// every few seconds).
const TCP_IDLE: Duration = Duration::from_secs(30);
/// Packets queued toward one connection; past it they are dropped, as a full UDP buffer's.
const TCP_WRITE_QUEUE: usize = 1024;
/// Most packets written with one flush.
const TCP_WRITE_BATCH: usize = 64;
/// A dial to another node's passive candidate that has not connected by then failed (its
/// checks go on; the next one dials again).
const TCP_DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// RFC 4571 framing: each packet behind its 16-bit length.
fn framing() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(2)
        .max_frame_length(TCP_FRAME_MAX)
        .new_codec()
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
                    proto: Protocol::Udp,
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

/// Listen on TCP at each of `addresses` (the UDP media sockets' own), for ICE-TCP. An
/// address where the port is taken is skipped with a warning: browsers there get UDP only.
pub(crate) async fn bind_tcp(addresses: &[SocketAddr]) -> Vec<(SocketAddr, TcpListener)> {
    let mut out = Vec::new();
    for addr in addresses {
        match TcpListener::bind(addr).await {
            Ok(l) => out.push((*addr, l)),
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot listen for media over TCP on this address")
            }
        }
    }
    out
}

/// Accept ICE-TCP connections on `listener` until the engine stops; each one's frames go
/// into the engine's queue as packets, and its writer is announced on `events`.
pub(crate) async fn tcp_accept_loop(listener: TcpListener, local: SocketAddr, to: TcpPlumbing) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(%local, error = %e, "media TCP accept error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if to.tx.is_closed() {
            return;
        }
        if !to.open.take(remote.ip()) {
            tracing::info!(%remote, "media TCP connection refused: too many open");
            continue;
        }
        let to = to.clone();
        tokio::spawn(async move {
            tcp_connection(stream, local, remote, &to).await;
            let _ = to.events.send(TcpEvent::Closed { local, remote }).await;
            to.open.give_back(remote.ip());
        });
    }
}

/// Connect from `local`'s address to another node's passive candidate `remote` for a node
/// link whose checks go over TCP. The connection is known as (`local`, `remote`), the pair
/// the link's ICE names (its active candidate's port is a placeholder: the kernel picks).
pub(crate) async fn tcp_dial(local: SocketAddr, remote: SocketAddr, to: TcpPlumbing) {
    if !to.open.take(remote.ip()) {
        tracing::debug!(%remote, "no media TCP dial: too many connections open");
        return;
    }
    let dialled = async {
        let socket = match remote {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(local.ip(), 0))?;
        socket.connect(remote).await
    };
    match tokio::time::timeout(TCP_DIAL_TIMEOUT, dialled).await {
        Ok(Ok(stream)) => {
            tracing::debug!(%local, %remote, "media TCP connection to another node open");
            tcp_connection(stream, local, remote, &to).await;
            let _ = to.events.send(TcpEvent::Closed { local, remote }).await;
        }
        Ok(Err(e)) => tracing::debug!(%local, %remote, error = %e, "media TCP dial failed"),
        Err(_) => tracing::debug!(%local, %remote, "media TCP dial timed out"),
    }
    to.open.give_back(remote.ip());
}

/// One ICE-TCP connection: its frames in, the engine's packets for it out.
async fn tcp_connection(
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    to: &TcpPlumbing,
) {
    // Media: each packet as soon as it is written.
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let mut reader = FramedRead::new(r, framing());
    let mut writer = FramedWrite::new(w, framing());
    let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(TCP_WRITE_QUEUE);
    if to
        .events
        .send(TcpEvent::Opened {
            local,
            remote,
            tx: wtx,
        })
        .await
        .is_err()
    {
        return;
    }
    let write = tokio::spawn(async move {
        // What is queued goes out in one write (a keyframe's burst, a link's many streams),
        // not a flush per packet, which on a busy machine could not keep up.
        while let Some(packet) = wrx.recv().await {
            let r: io::Result<()> = writer.feed(bytes::Bytes::from(packet)).await;
            let mut fed = r.is_ok();
            let mut more = 1;
            while fed && more < TCP_WRITE_BATCH {
                let Ok(packet) = wrx.try_recv() else { break };
                let r: io::Result<()> = writer.feed(bytes::Bytes::from(packet)).await;
                fed = r.is_ok();
                more += 1;
            }
            let flushed: io::Result<()> = SinkExt::<bytes::Bytes>::flush(&mut writer).await;
            if !fed || flushed.is_err() {
                break;
            }
        }
    });
    loop {
        let frame = match tokio::time::timeout(TCP_IDLE, reader.next()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) => {
                tracing::debug!(%remote, error = %e, "media TCP connection: bad frame; closing");
                break;
            }
            Ok(None) => break,
            Err(_) => {
                tracing::debug!(%remote, "media TCP connection idle; closing");
                break;
            }
        };
        let d = Datagram {
            data: frame.to_vec(),
            source: remote,
            destination: local,
            proto: Protocol::Tcp,
        };
        match to.tx.try_send(d) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                to.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => break,
        }
    }
    write.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A real listener on loopback with its queues.
    async fn listening() -> (
        SocketAddr,
        mpsc::Receiver<Datagram>,
        mpsc::Receiver<TcpEvent>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let local = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::channel(64);
        let (etx, erx) = mpsc::channel(64);
        tokio::spawn(tcp_accept_loop(listener, local, plumbing(tx, etx)));
        (local, rx, erx)
    }

    fn plumbing(tx: mpsc::Sender<Datagram>, events: mpsc::Sender<TcpEvent>) -> TcpPlumbing {
        TcpPlumbing {
            tx,
            events,
            dropped: Arc::new(AtomicU64::new(0)),
            open: Arc::new(TcpOpen::default()),
        }
    }

    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), f)
            .await
            .expect("in time")
    }

    #[tokio::test]
    async fn frames_arrive_as_tcp_packets_and_packets_go_back_framed() {
        let (local, mut rx, mut events) = listening().await;
        let mut c = TcpStream::connect(local).await.expect("connect");
        let Some(TcpEvent::Opened { remote, tx, .. }) = within(events.recv()).await else {
            panic!("no connection announced");
        };
        assert_eq!(remote, c.local_addr().expect("addr"));
        c.write_all(&[0, 3, 1, 2, 3, 0, 1, 9]).await.expect("write");
        for want in [vec![1u8, 2, 3], vec![9]] {
            let d = within(rx.recv()).await.expect("packet");
            assert_eq!(
                (d.data, d.proto, d.source, d.destination),
                (want, Protocol::Tcp, remote, local)
            );
        }
        tx.send(vec![7, 8]).await.expect("queue");
        let mut back = [0u8; 4];
        within(c.read_exact(&mut back)).await.expect("read");
        assert_eq!(back, [0, 2, 7, 8], "its 16-bit length first");
    }

    #[tokio::test]
    async fn a_dial_is_known_by_the_pair_its_ice_named_and_carries_frames_both_ways() {
        // The other node's passive candidate: a plain listener here.
        let passive = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let remote = passive.local_addr().expect("addr");
        let (tx, mut rx) = mpsc::channel(64);
        let (etx, mut events) = mpsc::channel(64);
        // Our active candidate's address: a port nothing listens on (the link's UDP one).
        let local: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        tokio::spawn(tcp_dial(local, remote, plumbing(tx, etx)));
        let (mut theirs, from) = within(passive.accept()).await.expect("accepted");
        assert_ne!(from.port(), 9, "the kernel's port, not the placeholder");
        let Some(TcpEvent::Opened {
            local: l,
            remote: r,
            tx,
        }) = within(events.recv()).await
        else {
            panic!("no connection announced");
        };
        assert_eq!((l, r), (local, remote));
        tx.send(vec![4, 2]).await.expect("queue");
        let mut got = [0u8; 4];
        within(theirs.read_exact(&mut got)).await.expect("read");
        assert_eq!(got, [0, 2, 4, 2]);
        theirs.write_all(&[0, 1, 6]).await.expect("write");
        let d = within(rx.recv()).await.expect("packet");
        assert_eq!(
            (d.data, d.proto, d.source, d.destination),
            (vec![6], Protocol::Tcp, remote, local)
        );
        drop(theirs);
        assert!(matches!(
            within(events.recv()).await,
            Some(TcpEvent::Closed { local: l, remote: r }) if (l, r) == (local, remote)
        ));
    }

    #[tokio::test]
    async fn a_dial_nobody_answers_ends_and_gives_its_slot_back() {
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let remote = closed.local_addr().expect("addr");
        drop(closed);
        let (tx, _rx) = mpsc::channel(64);
        let (etx, mut events) = mpsc::channel(64);
        let to = plumbing(tx, etx);
        let open = to.open.clone();
        within(tcp_dial("127.0.0.1:9".parse().expect("addr"), remote, to)).await;
        assert!(events.try_recv().is_err(), "nothing announced");
        assert!(open.0.lock().expect("lock").is_empty(), "its slot is free");
    }

    #[tokio::test]
    async fn a_frame_too_large_closes_only_that_connection() {
        let (local, mut rx, mut events) = listening().await;
        let mut bad = TcpStream::connect(local).await.expect("connect");
        within(events.recv()).await.expect("opened");
        let mut good = TcpStream::connect(local).await.expect("connect");
        within(events.recv()).await.expect("opened");
        // 0xffff bytes announced: past TCP_FRAME_MAX.
        bad.write_all(&[0xff, 0xff, 0, 0]).await.expect("write");
        let closed = within(events.recv()).await;
        assert!(
            matches!(closed, Some(TcpEvent::Closed { remote, .. }) if remote == bad.local_addr().expect("addr")),
            "{closed:?}"
        );
        let mut buf = [0u8; 1];
        assert_eq!(
            within(bad.read(&mut buf)).await.expect("read"),
            0,
            "closed by the node"
        );
        // The other connection carries on.
        good.write_all(&[0, 1, 5]).await.expect("write");
        assert_eq!(within(rx.recv()).await.expect("packet").data, [5]);
    }

    #[tokio::test]
    async fn one_address_gets_at_most_its_share_of_connections() {
        let (local, _rx, mut events) = listening().await;
        let mut open = Vec::new();
        for _ in 0..MAX_TCP_PER_IP {
            open.push(TcpStream::connect(local).await.expect("connect"));
            assert!(matches!(
                within(events.recv()).await,
                Some(TcpEvent::Opened { .. })
            ));
        }
        // One more is accepted by the kernel and closed at once, announced to nobody.
        let mut extra = TcpStream::connect(local).await.expect("connect");
        let mut buf = [0u8; 1];
        assert_eq!(
            within(extra.read(&mut buf)).await.expect("read"),
            0,
            "refused"
        );
        assert!(events.try_recv().is_err(), "not announced");
        // One closes: its slot is free again.
        drop(open.pop());
        assert!(matches!(
            within(events.recv()).await,
            Some(TcpEvent::Closed { .. })
        ));
        let _again = TcpStream::connect(local).await.expect("connect");
        assert!(matches!(
            within(events.recv()).await,
            Some(TcpEvent::Opened { .. })
        ));
    }
}

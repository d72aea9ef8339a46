//! The engine's IO: the sockets, the queue their reader tasks fill, and the clock. The
//! [`Engine`] itself takes datagrams, commands and the time and leaves what it transmits in
//! its outbox; this loop feeds it and sends that.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::engine::Engine;
use crate::net::{tcp_dial, Datagram, TcpConns, TcpEvent, TcpPlumbing};

/// Datagrams taken from the queue before the engine is driven, so a burst costs one pass.
const BURST: usize = 64;
/// A pair is dialled again this long after its last dial (a check over TCP is not
/// retransmitted, RFC 6544: each of its checks that finds no connection asks).
const REDIAL: Duration = Duration::from_secs(3);
/// Dials remembered; past this, the ones older than [`REDIAL`] are forgotten.
const DIALS_KEPT: usize = 256;

/// When each (local, remote) pair was last dialled, so checks in quick succession do not
/// each open a connection.
#[derive(Default)]
struct Dials(HashMap<(SocketAddr, SocketAddr), Instant>);

impl Dials {
    /// Whether to dial `pair` now.
    fn take(&mut self, pair: (SocketAddr, SocketAddr), now: Instant) -> bool {
        if self
            .0
            .get(&pair)
            .is_some_and(|at| now.duration_since(*at) < REDIAL)
        {
            return false;
        }
        if self.0.len() >= DIALS_KEPT {
            self.0.retain(|_, at| now.duration_since(*at) < REDIAL);
            if self.0.len() >= DIALS_KEPT {
                return false;
            }
        }
        self.0.insert(pair, now);
        true
    }
}

/// Run `engine` until its command queue closes.
pub(crate) async fn run(
    mut engine: Engine,
    sockets: HashMap<SocketAddr, Arc<UdpSocket>>,
    mut udp_rx: mpsc::Receiver<Datagram>,
    (mut tcp_events, tcp): (mpsc::Receiver<TcpEvent>, TcpPlumbing),
) {
    let mut conns = TcpConns::new();
    let mut dials = Dials::default();
    loop {
        let next = engine.next_timeout(Instant::now());
        tokio::select! {
            cmd = engine.commands.recv() => match cmd {
                Some(cmd) => engine.handle_command(cmd, Instant::now()),
                None => break,
            },
            Some(d) = udp_rx.recv() => {
                engine.handle_datagram(d, Instant::now());
                for _ in 0..BURST {
                    match udp_rx.try_recv() {
                        Ok(d) => engine.handle_datagram(d, Instant::now()),
                        Err(_) => break,
                    }
                }
            }
            Some(ev) = tcp_events.recv() => match ev {
                TcpEvent::Opened { local, remote, tx } => {
                    conns.insert((local, remote), tx);
                }
                TcpEvent::Closed { local, remote } => {
                    conns.remove(&(local, remote));
                }
            },
            _ = tokio::time::sleep_until(next.into()) => {}
        }
        engine.drive(Instant::now());
        if engine.has_output() {
            engine.flush(&sockets, &conns);
            let now = Instant::now();
            for (local, remote) in engine.take_dials() {
                if !conns.contains_key(&(local, remote)) && dials.take((local, remote), now) {
                    tokio::spawn(tcp_dial(local, remote, tcp.clone()));
                }
            }
        }
    }
    tracing::info!("media engine stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_dialled_again_only_after_a_while() {
        let mut d = Dials::default();
        let pair = (
            "10.0.0.1:7303".parse().expect("addr"),
            "10.0.0.2:7301".parse().expect("addr"),
        );
        let t0 = Instant::now();
        assert!(d.take(pair, t0));
        assert!(!d.take(pair, t0 + Duration::from_secs(1)));
        assert!(d.take(pair, t0 + REDIAL));
    }

    #[test]
    fn dials_remembered_are_bounded() {
        let mut d = Dials::default();
        let t0 = Instant::now();
        let local: SocketAddr = "10.0.0.1:7303".parse().expect("addr");
        for port in 0..DIALS_KEPT as u16 {
            assert!(d.take((local, SocketAddr::new(local.ip(), 1000 + port)), t0));
        }
        // Full of recent dials: a new pair waits.
        let new = (local, "10.0.0.3:1".parse().expect("addr"));
        assert!(!d.take(new, t0));
        // Later the old ones are forgotten and it goes.
        assert!(d.take(new, t0 + REDIAL));
        assert_eq!(d.0.len(), 1);
    }
}

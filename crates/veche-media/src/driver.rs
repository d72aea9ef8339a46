//! The engine's IO: the sockets, the queue their reader tasks fill, and the clock. The
//! [`Engine`] itself takes datagrams, commands and the time and leaves what it transmits in
//! its outbox; this loop feeds it and sends that.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::engine::Engine;
use crate::net::{Datagram, TcpConns, TcpEvent};

/// Datagrams taken from the queue before the engine is driven, so a burst costs one pass.
const BURST: usize = 64;

/// Run `engine` until its command queue closes.
pub(crate) async fn run(
    mut engine: Engine,
    sockets: HashMap<SocketAddr, Arc<UdpSocket>>,
    mut udp_rx: mpsc::Receiver<Datagram>,
    mut tcp_events: mpsc::Receiver<TcpEvent>,
) {
    let mut conns = TcpConns::new();
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
        }
    }
    tracing::info!("media engine stopped");
}

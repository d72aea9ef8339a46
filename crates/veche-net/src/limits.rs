//! How many libp2p connections a node accepts, so that a stranger cannot take the node's
//! memory, file descriptors or handshake work by opening connections: in total and per peer
//! (`libp2p::connection_limits`), and per remote IP address (here, as libp2p has no such
//! limit: a stranger mints peer ids for free, but not addresses).
//!
//! Connections through a relay are not counted per address: they all come from the relay's
//! address, and the relay bounds its circuits per peer itself ([`crate::relay_limits`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    dummy, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure,
    NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{connection_limits, Multiaddr, PeerId};

/// Most connections (in and out) a node holds at once.
pub const MAX_ESTABLISHED: u32 = 1024;
/// Most connections others opened to us.
pub const MAX_ESTABLISHED_INCOMING: u32 = 768;
/// Most incoming connections still in their handshake.
pub const MAX_PENDING_INCOMING: u32 = 64;
/// Most connections with one peer (QUIC, TCP, a relayed one and a redial's overlap fit).
pub const MAX_PER_PEER: u32 = 8;
/// Most incoming connections, established or in their handshake, from one IP address
/// (several nodes of one school behind its NAT fit; one stranger's machine does not take the
/// node).
pub const MAX_INCOMING_PER_IP: usize = 32;

/// The node's totals and per-peer limits.
pub fn connection_limits() -> connection_limits::Behaviour {
    connection_limits::Behaviour::new(
        connection_limits::ConnectionLimits::default()
            .with_max_established(Some(MAX_ESTABLISHED))
            .with_max_established_incoming(Some(MAX_ESTABLISHED_INCOMING))
            .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
            .with_max_established_per_peer(Some(MAX_PER_PEER)),
    )
}

/// Incoming connections from one IP address went over [`MAX_INCOMING_PER_IP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyFromAddress {
    /// The address.
    pub ip: IpAddr,
    /// The limit it reached.
    pub limit: usize,
}

impl fmt::Display for TooManyFromAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} already has {} connections to this node",
            self.ip, self.limit
        )
    }
}

impl std::error::Error for TooManyFromAddress {}

/// The IP address a direct connection comes from; `None` through a relay.
fn direct_ip(remote: &Multiaddr) -> Option<IpAddr> {
    if remote.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    remote.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// Incoming connections per IP address, from the handshake until closed.
#[derive(Debug)]
pub struct PerAddress {
    limit: usize,
    by_connection: HashMap<ConnectionId, IpAddr>,
    per_ip: HashMap<IpAddr, usize>,
}

impl PerAddress {
    /// At most `limit` incoming connections from one address.
    pub fn new(limit: usize) -> PerAddress {
        PerAddress {
            limit,
            by_connection: HashMap::new(),
            per_ip: HashMap::new(),
        }
    }

    /// Count a new incoming connection from `remote`, or refuse it.
    fn admit(&mut self, id: ConnectionId, remote: &Multiaddr) -> Result<(), TooManyFromAddress> {
        let Some(ip) = direct_ip(remote) else {
            return Ok(());
        };
        if self.by_connection.contains_key(&id) {
            return Ok(()); // counted at its handshake already
        }
        let n = self.per_ip.entry(ip).or_default();
        if *n >= self.limit {
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
            return Err(TooManyFromAddress {
                ip,
                limit: self.limit,
            });
        }
        *n += 1;
        self.by_connection.insert(id, ip);
        Ok(())
    }

    /// A connection went (closed, failed its handshake, or refused by another limit).
    fn release(&mut self, id: ConnectionId) {
        let Some(ip) = self.by_connection.remove(&id) else {
            return;
        };
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Connections counted from `ip`.
    pub fn from(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&ip).copied().unwrap_or(0)
    }
}

impl NetworkBehaviour for PerAddress {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.admit(id, remote).map_err(ConnectionDenied::new)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(id, remote).map_err(ConnectionDenied::new)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.release(connection_id)
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("multiaddr")
    }

    #[test]
    fn one_address_is_refused_past_its_share_and_others_are_not() {
        let mut limit = PerAddress::new(2);
        let a = addr("/ip4/10.0.0.5/udp/4001/quic-v1");
        let (c1, c2, c3) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
            ConnectionId::new_unchecked(3),
        );
        limit.admit(c1, &a).expect("first");
        // Counted once from its handshake to its establishment.
        limit.admit(c1, &a).expect("first, established");
        limit
            .admit(c2, &addr("/ip4/10.0.0.5/tcp/4001"))
            .expect("second");
        let refused = limit.admit(c3, &a).expect_err("third refused");
        assert_eq!(
            refused,
            TooManyFromAddress {
                ip: "10.0.0.5".parse().expect("ip"),
                limit: 2
            }
        );
        limit
            .admit(c3, &addr("/ip4/10.0.0.6/udp/4001/quic-v1"))
            .expect("another address");
        // One closes: room for one more; nothing stays behind once all have gone.
        limit.release(c1);
        limit
            .admit(ConnectionId::new_unchecked(4), &a)
            .expect("after one closed");
        for id in [2, 3, 4] {
            limit.release(ConnectionId::new_unchecked(id));
        }
        assert!(limit.per_ip.is_empty() && limit.by_connection.is_empty());
    }

    #[test]
    fn connections_through_a_relay_are_left_to_the_relay() {
        let mut limit = PerAddress::new(1);
        let relayed = addr("/ip4/10.0.0.9/udp/4001/quic-v1/p2p/12D3KooWGzh8fH4jBmuXjkmVd9sHGxNjTfHUsVZL3cqmNoDt4NtZ/p2p-circuit");
        for id in 1..=5 {
            limit
                .admit(ConnectionId::new_unchecked(id), &relayed)
                .expect("relayed");
        }
        assert_eq!(limit.from("10.0.0.9".parse().expect("ip")), 0);
    }
}

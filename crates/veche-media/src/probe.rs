//! Every node is the others' STUN server: a probe from one of our link ports to another
//! node (a relay, on the public side) comes back saying where our NAT maps that port. A
//! NAT that does not keep our port numbers (one that was symmetric and kept its mappings
//! after a change, a carrier-grade NAT) maps every flow from a port the same way once it
//! maps endpoint-independently, so that address is what a direct try must offer.
//!
//! The messages are STUN binding requests and answers (RFC 8489) with a fixed `USERNAME`
//! and a `MESSAGE-INTEGRITY` keyed with a fixed, public password: str0m's STUN parser
//! takes only messages with both (ICE's), and the integrity proves nothing here. Only a
//! probe we sent (its transaction id) is taken as an answer, and an answer only ever adds
//! a port of an address already seen from outside ([`crate::engine`]'s `learned_mapping`).
//! Pure: bytes in, bytes out.

use std::net::SocketAddr;

use str0m::ice::{StunMessage, StunMessageBuilder, TransId};

const USERNAME: &str = "veche:probe";
const PASSWORD: &[u8] = b"veche-probe";

fn hmac_sha1(key: &[u8], payloads: &[&[u8]]) -> [u8; 20] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut ctx = ring::hmac::Context::with_key(&key);
    for p in payloads {
        ctx.update(p);
    }
    let mut out = [0u8; 20];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

fn encode(m: StunMessage<'_>) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = m.to_bytes(Some(PASSWORD), &mut buf, hmac_sha1).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// A probe with a new transaction id.
pub fn request() -> Option<(TransId, Vec<u8>)> {
    let id = TransId::new();
    let m = StunMessageBuilder::new()
        .binding()
        .request()
        .username(USERNAME)
        .prio(0)
        .build(id);
    Some((id, encode(m)?))
}

/// What a datagram is, as far as probes go.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// Another node asks where it comes from: answer with these bytes.
    Asked(Vec<u8>),
    /// An answer to probe `TransId`: we were seen at this address.
    Answered(TransId, SocketAddr),
}

/// `data`, come from `source`, if it is a probe or a probe's answer.
pub fn read(data: &[u8], source: SocketAddr) -> Option<Probe> {
    // STUN's first two bits are zero; RTP, RTCP and DTLS start otherwise.
    if data.first().is_none_or(|b| *b > 1) {
        return None;
    }
    let m = StunMessage::parse(data).ok()?;
    if !m.verify(PASSWORD, hmac_sha1) {
        return None;
    }
    if m.is_binding_request() && m.username() == Some(USERNAME) {
        let answer = StunMessageBuilder::new()
            .binding()
            .success()
            .username(USERNAME)
            .xor_mapped_address(source)
            .build(m.trans_id());
        return encode(answer).map(Probe::Asked);
    }
    if m.is_successful_binding_response() && m.username() == Some(USERNAME) {
        return m.mapped_address().map(|a| Probe::Answered(m.trans_id(), a));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_is_answered_with_where_it_came_from_and_nothing_else_is() {
        let (id, ask) = request().expect("probe");
        let seen: SocketAddr = "203.0.113.11:26770".parse().expect("addr");
        let Some(Probe::Asked(answer)) = read(&ask, seen) else {
            panic!("not taken as a probe");
        };
        let relay: SocketAddr = "203.0.113.10:7303".parse().expect("addr");
        assert_eq!(read(&answer, relay), Some(Probe::Answered(id, seen)));
        // An ICE check (another username) is not a probe; nor is media.
        let check = StunMessageBuilder::new()
            .binding()
            .request()
            .username("abcd:efgh")
            .prio(1)
            .build(TransId::new());
        let mut buf = vec![0u8; 256];
        let n = check
            .to_bytes(Some(PASSWORD), &mut buf, hmac_sha1)
            .expect("check");
        assert_eq!(read(&buf[..n], seen), None);
        assert_eq!(read(&[0x80, 0x60, 0, 1, 0, 0, 0, 0], seen), None);
        // A probe whose integrity does not hold is not answered.
        let mut bad = ask.clone();
        let last = bad.len() - 10;
        bad[last] ^= 0xff;
        assert_eq!(read(&bad, seen), None);
    }
}

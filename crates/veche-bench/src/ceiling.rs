//! The machine's ceiling for an SFU's inner loop: for every packet, SRTP's AES-128-GCM
//! (RTP header as associated data, 16-byte tag), then UDP sends in batches with sendmmsg to
//! many destinations on loopback. No SFU can forward faster than this on one core; the
//! report gives forwarded packets per CPU-second as a fraction of it.

use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use nix::sys::socket::{sendmmsg, MsgFlags, MultiHeaders, SockaddrIn};
use nix::time::{clock_gettime, ClockId};

const BATCH: usize = 32;

/// Packets per CPU-second and the bytes each carried.
#[derive(Debug, Clone, Copy)]
pub struct Ceiling {
    pub packets_per_cpu_s: f64,
    pub packet_bytes: usize,
    pub destinations: usize,
}

/// This thread's CPU time.
pub fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32))
        .unwrap_or_default()
}

/// Encrypt and send `packet_bytes`-sized packets round-robin to `destinations` loopback
/// sockets for about `run`.
pub fn measure(packet_bytes: usize, destinations: usize, run: Duration) -> Result<Ceiling> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    // Receivers nobody reads: once their buffers fill the kernel drops at the receiver, as
    // it would for a slow subscriber; the sender's work is the same either way.
    let sinks: Vec<UdpSocket> = (0..destinations)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    let addrs: Vec<SockaddrIn> = sinks
        .iter()
        .map(|s| match s.local_addr() {
            Ok(SocketAddr::V4(a)) => Ok(SockaddrIn::from(a)),
            _ => anyhow::bail!("no IPv4 address"),
        })
        .collect::<Result<_>>()?;
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_128_GCM, &[7u8; 16]).map_err(|_| anyhow::anyhow!("aes key"))?,
    );
    let payload_len = packet_bytes.saturating_sub(12 + 16).max(16);
    let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
    let mut bufs: Vec<Vec<u8>> = (0..BATCH)
        .map(|_| Vec::with_capacity(packet_bytes + 32))
        .collect();
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let fd = sock.as_raw_fd();

    let mut seq: u64 = 0;
    let mut sent: u64 = 0;
    let cpu0 = thread_cpu();
    let wall = Instant::now();
    while wall.elapsed() < run {
        let mut to = Vec::with_capacity(BATCH);
        for buf in bufs.iter_mut() {
            seq += 1;
            buf.clear();
            // RTP header: version 2, PT 96, sequence, timestamp, SSRC.
            buf.extend_from_slice(&[0x80, 96]);
            buf.extend_from_slice(&(seq as u16).to_be_bytes());
            buf.extend_from_slice(&((seq * 3000) as u32).to_be_bytes());
            buf.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            buf.extend_from_slice(&payload);
            let (header, body) = buf.split_at_mut(12);
            let mut iv = [0u8; 12];
            iv[4..12].copy_from_slice(&seq.to_be_bytes());
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(iv),
                    Aad::from(&*header),
                    body,
                )
                .map_err(|_| anyhow::anyhow!("seal"))?;
            buf.extend_from_slice(tag.as_ref());
            to.push(Some(addrs[(seq as usize) % addrs.len()]));
        }
        let slices: Vec<[IoSlice<'_>; 1]> = bufs.iter().map(|b| [IoSlice::new(b)]).collect();
        let r =
            sendmmsg(fd, &mut headers, &slices, &to, [], MsgFlags::empty()).context("sendmmsg")?;
        sent += r.count() as u64;
    }
    let cpu = thread_cpu().saturating_sub(cpu0).as_secs_f64().max(1e-9);
    drop(sinks);
    Ok(Ceiling {
        packets_per_cpu_s: sent as f64 / cpu,
        packet_bytes,
        destinations,
    })
}

/// The median UDP round trip on loopback (a 100-byte ping and its echo, 200 times): the
/// "network round trip" of the join goal.
pub fn loopback_rtt() -> Result<Duration> {
    let a = UdpSocket::bind("127.0.0.1:0")?;
    let b = UdpSocket::bind("127.0.0.1:0")?;
    a.set_read_timeout(Some(Duration::from_secs(1)))?;
    b.set_read_timeout(Some(Duration::from_secs(1)))?;
    let (aa, ba) = (a.local_addr()?, b.local_addr()?);
    let mut buf = [0u8; 128];
    let mut v = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        a.send_to(&[1u8; 100], ba)?;
        let (n, _) = b.recv_from(&mut buf)?;
        b.send_to(&buf[..n], aa)?;
        a.recv_from(&mut buf)?;
        v.push(t.elapsed());
    }
    v.sort();
    Ok(v[v.len() / 2])
}

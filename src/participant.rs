//! `veche join`: a participant on the command line, with its key in a file. It joins over
//! the browser's signaling (the node's challenge signed with the file's key, the link's
//! invite presented), receives everyone's media over WebRTC (str0m) and reports what
//! arrives, prints who comes and goes and the chat, and can say something in the chat. It
//! publishes no media. For a room's IT person: is the meeting alive, from a terminal; for
//! scripts: a participant whose key, and so whose role and removal, is a file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;
use veche_signal::{ClientMsg, Participant, ServerMsg};
use veche_trust::{encode_key, Keypair};

/// Exit status when the node refused the join or ended our part in the meeting.
pub const REFUSED: i32 = 2;

/// What a meeting link says.
#[derive(Debug, PartialEq, Eq)]
struct Link {
    /// `host:port` of the node's HTTP address.
    authority: String,
    meeting: String,
    /// The `node` the link names (the node id of the meeting's home).
    node: Option<String>,
    invite: Option<String>,
}

/// Parse `http://host:port/m/<id>[?...][#invite=<token>]`.
fn parse_link(link: &str) -> Result<Link> {
    let rest = link.strip_prefix("http://").ok_or_else(|| {
        anyhow!(
            "give the node's http:// link (the command-line participant does not speak https yet)"
        )
    })?;
    let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| anyhow!("no meeting in the link"))?;
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let node = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("node="))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(str::to_owned);
    let meeting = path
        .strip_prefix("m/")
        .filter(|m| veche_node::is_meeting_id(m))
        .ok_or_else(|| anyhow!("not a meeting link: expected http://HOST:PORT/m/abc-def-ghk"))?;
    let invite = fragment
        .split('&')
        .find_map(|kv| kv.strip_prefix("invite="))
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    Ok(Link {
        authority: authority.to_owned(),
        meeting: meeting.to_owned(),
        node,
        invite,
    })
}

/// Why the key will not sign a node's challenge.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum NodeMismatch {
    #[error("the node at {authority} says it is {said}, but {expected} was expected: refusing to sign for it (another node could use that proof as you)")]
    Other {
        authority: String,
        said: String,
        expected: String,
    },
    #[error("the node at {authority} is not on this machine and neither the link nor --node names it: give --node ID (its id from `veche id` there)")]
    Unknown { authority: String },
}

/// The node id a challenge may name: the one `--node` or the link names; a node on this
/// machine (loopback) is the operator's own and signs for itself.
fn expected_node(link: &Link, given: Option<&str>, said: &str) -> Result<(), NodeMismatch> {
    let host = link
        .authority
        .rsplit_once(':')
        .map_or(link.authority.as_str(), |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let expected = given.or(if loopback { None } else { link.node.as_deref() });
    match expected {
        Some(e) if e == said => Ok(()),
        Some(e) => Err(NodeMismatch::Other {
            authority: link.authority.clone(),
            said: said.to_owned(),
            expected: e.to_owned(),
        }),
        None if loopback => Ok(()),
        None => Err(NodeMismatch::Unknown {
            authority: link.authority.clone(),
        }),
    }
}

/// The options of `veche join`.
pub struct JoinOptions {
    pub link: String,
    pub name: String,
    pub key_file: PathBuf,
    pub seconds: Option<u64>,
    pub say: Option<String>,
    /// The id of the node the link's address reaches, when it is not on this machine and
    /// the link does not name it.
    pub node: Option<String>,
}

/// What one of the others' tracks brought us.
#[derive(Default)]
struct Track {
    who: String,
    source: String,
    frames: u64,
    bytes: u64,
}

/// Join, report until the time is up (or the node ends it), and return the exit status.
pub async fn join(opts: JoinOptions) -> Result<i32> {
    let link = parse_link(&opts.link)?;
    let (secret, made) = veche_node::load_or_create_person_key(&opts.key_file)?;
    let me = Keypair::from_secret(&secret);
    let key = encode_key(&me.public());
    println!(
        "key {} ({}), fingerprint {}",
        opts.key_file.display(),
        if made { "made now" } else { "loaded" },
        me.public().fingerprint()
    );

    let url = format!("ws://{}/ws", link.authority);
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url.as_str()),
    )
    .await
    .map_err(|_| anyhow!("{url}: no answer in 10 s"))?
    .with_context(|| format!("cannot reach the node at {url}"))?;
    // Media goes out the way the signaling does: the local address of this connection.
    let local_ip = match ws.get_ref() {
        MaybeTlsStream::Plain(s) => s.local_addr()?.ip(),
        _ => bail!("unexpected TLS stream"),
    };

    let ServerMsg::Challenge { nonce, node } = next_msg(&mut ws, Duration::from_secs(10)).await?
    else {
        bail!("the node did not send a challenge first");
    };
    expected_node(&link, opts.node.as_deref(), &node)?;
    let sig = me.sign_challenge(&node, &link.meeting, &nonce);
    let join = ClientMsg::Join {
        meeting: link.meeting.clone(),
        name: opts.name.clone(),
        key,
        sig: serde_json::to_value(sig)?
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        invite: link.invite.clone(),
    };
    ws.send(Message::text(join.to_text())).await?;

    let mut names: HashMap<u64, String> = HashMap::new();
    let (you, role, meeting, participants) = loop {
        match next_msg(&mut ws, Duration::from_secs(120)).await? {
            ServerMsg::Welcome {
                you,
                role,
                meeting,
                participants,
                ..
            } => break (you, role, meeting, participants),
            ServerMsg::Lobby => println!("waiting in the lobby for the host to let you in"),
            ServerMsg::Error { code, message, .. } => {
                println!("refused: {message} ({code})");
                return Ok(REFUSED);
            }
            _ => {}
        }
    };
    println!(
        "joined \"{}\" as {}",
        meeting.map_or_else(|| "?".to_owned(), |m| m.title),
        role.as_deref().unwrap_or("?")
    );
    for p in &participants {
        note_participant(&mut names, p, "here");
    }

    // Receive-only media: a data channel is all we offer; the node then offers the others'
    // tracks and we answer.
    let sock = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    let local = sock.local_addr()?;
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| anyhow!("{e}"))?);
    let mut api = rtc.sdp_api();
    api.add_channel("veche".into());
    let (offer, mut pending) = api
        .apply()
        .map(|(o, p)| (o, Some(p)))
        .ok_or_else(|| anyhow!("nothing to offer"))?;
    let offer = ClientMsg::Offer {
        sdp: offer.to_sdp_string(),
        sources: HashMap::new(),
    };
    ws.send(Message::text(offer.to_text())).await?;
    if let Some(text) = &opts.say {
        let chat = ClientMsg::Chat {
            text: text.clone(),
            everyone: false,
        };
        ws.send(Message::text(chat.to_text())).await?;
    }

    let mut tracks: HashMap<String, Track> = HashMap::new();
    let until = opts
        .seconds
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut report = tokio::time::interval(Duration::from_secs(2));
    let mut buf = vec![0u8; 2000];
    let status = loop {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = sock.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => println!("media connected"),
                    Event::MediaData(d) => {
                        let t = tracks.entry(d.mid.to_string()).or_default();
                        t.frames += 1;
                        t.bytes += d.data.len() as u64;
                    }
                    _ => {}
                },
                Err(e) => bail!("media: {e}"),
            }
        };
        let deadline =
            until.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, source) = r?;
                if let Ok(contents) = buf[..n].try_into() {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: local,
                        contents,
                    }));
                }
            }
            m = ws.next() => {
                let t = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    _ => {
                        println!("the node closed the connection");
                        break REFUSED;
                    }
                };
                let Ok(msg) = ServerMsg::parse(&t) else { continue };
                match msg {
                    ServerMsg::Answer { sdp } => {
                        let a = SdpAnswer::from_sdp_string(&sdp)?;
                        if let Some(p) = pending.take() {
                            rtc.sdp_api().accept_answer(p, a)?;
                        }
                    }
                    ServerMsg::Offer { sdp, tracks: offered } => {
                        let o = SdpOffer::from_sdp_string(&sdp)?;
                        let a = rtc.sdp_api().accept_offer(o)?;
                        let answer = ClientMsg::Answer { sdp: a.to_sdp_string() };
                        ws.send(Message::text(answer.to_text())).await?;
                        for (mid, info) in offered {
                            let t = tracks.entry(mid).or_default();
                            t.who = names.get(&info.participant).cloned().unwrap_or_else(|| "?".into());
                            t.source = format!("{:?}", info.source).to_lowercase();
                        }
                    }
                    ServerMsg::ParticipantJoined { participant } => note_participant(&mut names, &participant, "joined"),
                    ServerMsg::ParticipantLeft { id } => {
                        if let Some(name) = names.remove(&id) {
                            println!("{name} left");
                        }
                    }
                    ServerMsg::Chat { message } => {
                        if message.from != you {
                            println!("chat {}: {}", message.name, message.text);
                        } else {
                            println!("chat sent: {}", message.text);
                        }
                    }
                    ServerMsg::Moderated { action } => println!("a moderator: {action}"),
                    ServerMsg::Error { code, message, fatal } => {
                        println!("{message} ({code})");
                        if fatal {
                            break REFUSED;
                        }
                    }
                    _ => {}
                }
            }
            _ = report.tick() => print_tracks(&tracks, "receiving"),
            _ = tokio::time::sleep_until(deadline) => break 0,
            _ = tokio::signal::ctrl_c() => break 0,
            _ = tokio::time::sleep_until(timeout.into()) => {}
        }
        rtc.handle_input(Input::Timeout(Instant::now()))?;
    };
    print_tracks(&tracks, "received in all");
    let _ = ws.send(Message::text(ClientMsg::Leave.to_text())).await;
    let _ = ws.close(None).await;
    Ok(status)
}

fn note_participant(names: &mut HashMap<u64, String>, p: &Participant, what: &str) {
    let fp = p
        .key
        .as_deref()
        .and_then(|k| veche_trust::decode_key(k).ok())
        .map(|k| k.fingerprint())
        .unwrap_or_else(|| "no key".into());
    println!("{what}: {} ({fp})", p.name);
    names.insert(p.id, p.name.clone());
}

fn print_tracks(tracks: &HashMap<String, Track>, what: &str) {
    let mut lines: Vec<String> = tracks
        .values()
        .filter(|t| !t.who.is_empty())
        .map(|t| {
            format!(
                "{} {} {} frames {} KiB",
                t.who,
                t.source,
                t.frames,
                t.bytes / 1024
            )
        })
        .collect();
    if lines.is_empty() {
        return;
    }
    lines.sort();
    println!("{what}: {}", lines.join("; "));
}

async fn next_msg<S>(ws: &mut S, limit: Duration) -> Result<ServerMsg>
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let end = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(end, ws.next()).await {
            Err(_) => bail!("the node said nothing for {} s", limit.as_secs()),
            Ok(Some(Ok(Message::Text(t)))) => match ServerMsg::parse(&t) {
                Ok(m) => return Ok(m),
                // A message this client does not know: a newer node; skip it.
                Err(_) => continue,
            },
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => bail!("signaling: {e}"),
            Ok(None) => bail!("the node closed the connection"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_parse_with_node_hint_and_invite() {
        let l = parse_link("http://127.0.0.1:7300/m/abc-def-ghk?node=12D3KooW#invite=tok.en")
            .expect("link");
        assert_eq!(
            l,
            Link {
                authority: "127.0.0.1:7300".into(),
                meeting: "abc-def-ghk".into(),
                node: Some("12D3KooW".into()),
                invite: Some("tok.en".into()),
            }
        );
        assert_eq!(
            parse_link("http://h:1/m/abc-def-ghk")
                .expect("plain")
                .invite,
            None
        );
        assert!(parse_link("https://h/m/abc-def-ghk").is_err());
        assert!(parse_link("http://h:1/x/abc").is_err());
        assert!(parse_link("http://h:1/m/../../etc").is_err());
    }

    #[test]
    fn signs_only_for_the_node_it_meant_to_reach() {
        let remote = parse_link("http://10.1.2.3:7300/m/abc-def-ghk?node=12D3KooWA").expect("link");
        assert_eq!(expected_node(&remote, None, "12D3KooWA"), Ok(()));
        assert!(matches!(
            expected_node(&remote, None, "12D3KooWEvil"),
            Err(NodeMismatch::Other { .. })
        ));
        assert_eq!(
            expected_node(&remote, Some("12D3KooWB"), "12D3KooWB"),
            Ok(())
        );
        let bare = parse_link("http://10.1.2.3:7300/m/abc-def-ghk").expect("link");
        assert!(matches!(
            expected_node(&bare, None, "12D3KooWA"),
            Err(NodeMismatch::Unknown { .. })
        ));
        // The operator's own node, through another node's link: it signs for itself.
        let own = parse_link("http://127.0.0.1:7300/m/abc-def-ghk?node=12D3KooWA").expect("link");
        assert_eq!(expected_node(&own, None, "12D3KooWB"), Ok(()));
        assert!(matches!(
            expected_node(&own, Some("12D3KooWB"), "12D3KooWC"),
            Err(NodeMismatch::Other { .. })
        ));
    }
}

//! The veche node-to-node protocol, `/veche/node/2`: one request, one response, JSON.
//!
//! The codec moves raw bytes with a size limit; parsing happens in [`handle_request`], so a
//! peer that sends garbage gets an error *response* (not a reset stream) and the node logs
//! it. Every request is answered: with a response or with [`Response::Error`].

use std::collections::BTreeMap;
use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};
pub use veche_core::{LinkTrack, MeetingEvent};

/// The protocol name. The version is in the name: a node that speaks only a later version
/// fails negotiation cleanly instead of misreading messages.
/// Version 2: a link's mid may carry another track after the one it carried left (m-lines
/// are reused), and relays take `unrelay`.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/veche/node/2");
/// The version in [`PROTOCOL`], as hellos say it.
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest request a node reads (a media offer for a large meeting fits).
pub const MAX_REQUEST: usize = 256 * 1024;
/// Largest response a node reads.
pub const MAX_RESPONSE: usize = 1024 * 1024;

/// A request from one node to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Unknown fields are ignored: a later minor version may add some.
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// Who are you and what do you offer?
    Hello,
    /// What is this meeting? (Asked by a node whose browser opened a link to it.)
    Meeting {
        /// Meeting id.
        id: String,
        /// A person the asker carries, with the proof they made for the asker (a
        /// veche-meeting `Presence` token). Without one, or with one the answering node's
        /// rules refuse, the answer is what a stranger may learn: the title.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        presence: Option<String>,
    },
    /// The asker's media offer for a meeting: it sends its participants' tracks on the mids
    /// listed in `tracks`. Answered with [`Response::Link`].
    Link {
        /// Meeting id.
        meeting: String,
        /// The asker's id for this link; a new id replaces the old link.
        link: u64,
        /// SDP offer.
        sdp: String,
        /// mid → whose track it is.
        tracks: BTreeMap<String, LinkTrack>,
    },
    /// A moderation action (a veche-trust `Action` token) for a meeting both nodes carry:
    /// the receiver checks it against its copy of the host's document before it acts.
    Action {
        /// Meeting id.
        meeting: String,
        /// The signed action.
        action: String,
    },
    /// The host withdrew an invite (a veche-trust `Revocation` token) of a meeting both nodes
    /// carry: the receiver checks it against its copy of the host's document and stores it.
    Revocation {
        /// Meeting id.
        meeting: String,
        /// The signed revocation.
        revocation: String,
    },
    /// Asked by a relay before it forwards `node`'s media to the receiver: is `node` a
    /// member of the meeting here, and did it name the asker as the relay its tracks come
    /// through (its `via` event)? Answered [`Response::Ok`], or refused. The receiver's own
    /// rules decide, so a relay forwards only for nodes its destination admitted.
    Relayed {
        /// Meeting id.
        meeting: String,
        /// The node whose media the relay would forward.
        node: String,
    },
    /// Asked of a meeting's home node before the asker lets in a person with an invite that
    /// has a use limit: the home node counts the use (once per person) and commits it before
    /// it answers [`Response::Ok`], or refuses (used up, or the person's proof refused).
    UseInvite {
        /// Meeting id.
        meeting: String,
        /// The person, with the proof they made for the asker (a veche-meeting `Presence`
        /// token).
        presence: String,
    },
    /// A person waits (or stopped waiting) in the asker's waiting room for a meeting both
    /// nodes carry: the receiver shows them to its host and moderators once its rules take
    /// their proof (made for the asker); a decision signed there comes back as an
    /// [`Request::Action`].
    Knock {
        /// Meeting id.
        meeting: String,
        /// The person's proof for the asker (a veche-meeting `Presence` token).
        presence: String,
        /// Their name.
        name: String,
        /// Waiting (true), or no longer.
        waiting: bool,
    },
    /// What happened in a meeting on the asker's side.
    Events {
        /// Meeting id.
        meeting: String,
        /// In order.
        events: Vec<MeetingEvent>,
    },
}

/// A public meeting a node hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingSummary {
    /// Meeting id.
    pub id: String,
    /// Title.
    pub title: String,
}

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHello {
    /// The operator's name for the node.
    pub name: String,
    /// veche version.
    pub version: String,
    /// Protocol version spoken.
    pub protocol: u32,
    /// Whether it relays for others.
    pub relay: bool,
    /// Public meetings it hosts.
    pub meetings: Vec<MeetingSummary>,
}

/// Error codes of the node protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not JSON, or not a known request.
    Malformed,
    /// Over [`MAX_REQUEST`].
    TooLarge,
    /// No such meeting on this node.
    UnknownMeeting,
    /// The node cannot serve this now (shutting down, or the request was refused).
    Unavailable,
    /// Checked and refused (a moderation action without authority, ...).
    Refused,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Response {
    /// Answer to [`Request::Hello`].
    Hello(NodeHello),
    /// Answer to [`Request::Meeting`].
    Meeting {
        /// Meeting id.
        id: String,
        /// Title.
        title: String,
        /// The host's signed meeting document, if the host signed it (a veche-trust token),
        /// for an asker that showed a person let in: it enforces the same rules.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        doc: Option<String>,
        /// The host's signed revocations of invites known here; the asker checks each.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        revocations: Vec<String>,
        /// The signed removals, locks and ends of the meeting (oldest first); the asker
        /// checks each as of its time and stores its effect.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        actions: Vec<String>,
        /// What holds now of the breakout rooms and the spotlight (the signed opening, each
        /// person's latest room, the spotlight), kept apart from `actions` so that a class's
        /// many moves never push out its removals and ends; checked like them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        state: Vec<String>,
    },
    /// Answer to [`Request::Link`]: the SDP answer.
    Link {
        /// SDP answer.
        sdp: String,
    },
    /// Done.
    Ok,
    /// The request was refused.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Plain words.
        message: String,
    },
}

/// A request as read off the wire, before parsing.
#[derive(Debug, Clone)]
pub enum RawRequest {
    /// The bytes, at most [`MAX_REQUEST`].
    Bytes(Vec<u8>),
    /// The peer sent more than [`MAX_REQUEST`]; the rest was not read.
    TooLarge,
}

/// What to do with one request.
#[derive(Debug)]
pub enum Handled {
    /// Answer with this.
    Answer(Response),
    /// A well-formed request for the node's meetings: the application answers it.
    App(Request),
}

/// Answer one raw request where the protocol alone can. Pure: the node's self-description
/// comes in as an argument.
pub fn handle_request(raw: &RawRequest, me: &NodeHello) -> Handled {
    let bytes = match raw {
        RawRequest::Bytes(b) => b,
        RawRequest::TooLarge => {
            return Handled::Answer(Response::Error {
                code: ErrorCode::TooLarge,
                message: format!("requests are limited to {MAX_REQUEST} bytes"),
            })
        }
    };
    match serde_json::from_slice::<Request>(bytes) {
        Ok(Request::Hello) => Handled::Answer(Response::Hello(me.clone())),
        Ok(other) => Handled::App(other),
        Err(e) => Handled::Answer(Response::Error {
            code: ErrorCode::Malformed,
            message: format!("not a veche request: {e}"),
        }),
    }
}

/// Reads and writes whole messages, bounded. The stream's end marks the message's end.
#[derive(Debug, Clone, Copy, Default)]
pub struct Codec;

async fn read_bounded<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    limit: usize,
) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    // One byte over the limit tells "too large" from "exactly the limit".
    io.take(limit as u64 + 1).read_to_end(&mut buf).await?;
    Ok((buf.len() <= limit).then_some(buf))
}

impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = RawRequest;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<RawRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        Ok(match read_bounded(io, MAX_REQUEST).await? {
            Some(b) => RawRequest::Bytes(b),
            None => RawRequest::TooLarge,
        })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_bounded(io, MAX_RESPONSE)
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "response too large"))?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: RawRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        if let RawRequest::Bytes(b) = req {
            io.write_all(&b).await?;
        }
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let bytes = serde_json::to_vec(&res).map_err(io::Error::other)?;
        io.write_all(&bytes).await?;
        io.close().await
    }
}

/// Encode a request for the wire.
pub fn encode(req: &Request) -> RawRequest {
    RawRequest::Bytes(serde_json::to_vec(req).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> NodeHello {
        NodeHello {
            name: "school".into(),
            version: "0.1.0".into(),
            protocol: PROTOCOL_VERSION,
            relay: false,
            meetings: vec![],
        }
    }

    #[test]
    fn hello_is_answered_and_garbage_gets_a_precise_error() {
        assert!(matches!(
            handle_request(&encode(&Request::Hello), &me()),
            Handled::Answer(Response::Hello(h)) if h == me()
        ));
        for garbage in [&b"\xff\xfe"[..], b"{}", b"{\"type\":\"launch\"}"] {
            match handle_request(&RawRequest::Bytes(garbage.to_vec()), &me()) {
                Handled::Answer(Response::Error {
                    code: ErrorCode::Malformed,
                    message,
                }) => assert!(!message.is_empty()),
                other => panic!("{garbage:?} gave {other:?}"),
            }
        }
        assert!(matches!(
            handle_request(&RawRequest::TooLarge, &me()),
            Handled::Answer(Response::Error {
                code: ErrorCode::TooLarge,
                ..
            })
        ));
        let link = encode(&Request::Events {
            meeting: "m".into(),
            events: vec![MeetingEvent::Left { id: 7 }],
        });
        assert!(matches!(
            handle_request(&link, &me()),
            Handled::App(Request::Events { .. })
        ));
    }

    #[test]
    fn reads_are_bounded() {
        let big = vec![b'x'; MAX_REQUEST + 10];
        let mut io = futures::io::Cursor::new(big);
        let got = futures::executor::block_on(read_bounded(&mut io, MAX_REQUEST)).expect("read");
        assert!(got.is_none());
        let mut io = futures::io::Cursor::new(vec![b'y'; MAX_REQUEST]);
        let got = futures::executor::block_on(read_bounded(&mut io, MAX_REQUEST)).expect("read");
        assert_eq!(got.map(|b| b.len()), Some(MAX_REQUEST));
    }
}

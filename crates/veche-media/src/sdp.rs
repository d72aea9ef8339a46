//! What the node changes in the SDP it sends a browser, as text (pure functions).
//!
//! **No transport-wide congestion control on the tracks the node sends a browser.** With
//! `transport-cc` negotiated on an m-line, str0m registers every packet it sends there in a
//! send register of a fixed 1000 records per connection (~87 KB per viewer, the largest
//! part of a viewer's memory), and uses it only for a bandwidth estimate toward that viewer,
//! which the node does not make yet (the simulcast issue adds it, and with it a register
//! sized by time). The browser's own tracks keep it: the browser's estimate of its uplink
//! needs the node's feedback. Node links keep it on every m-line: their loss and round trip
//! (People panel) come from it.

/// The extension's URI (RFC 8285 extmap; draft-holmer-rmcat-transport-wide-cc-extensions).
const TRANSPORT_CC: &str = "transport-wide-cc-extensions";

/// `sdp` with `transport-cc` (its header extension and its feedback) taken out of every
/// m-section the node only sends on (`a=sendonly`, the node's view).
pub(crate) fn without_send_twcc(sdp: &str) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(sdp.len());
    // Each part is the session section or one m-section, with its lines.
    let mut section: Vec<&str> = Vec::new();
    let flush = |section: &mut Vec<&str>, out: &mut String| {
        let sending =
            section.first().is_some_and(|l| l.starts_with("m=")) && section.contains(&"a=sendonly");
        for line in section.drain(..) {
            let twcc = (line.starts_with("a=extmap:") && line.contains(TRANSPORT_CC))
                || (line.starts_with("a=rtcp-fb:") && line.ends_with(" transport-cc"));
            if !(sending && twcc) {
                out.push_str(line);
                out.push_str(eol);
            }
        }
    };
    for line in sdp.lines() {
        if line.starts_with("m=") {
            flush(&mut section, &mut out);
        }
        section.push(line);
    }
    flush(&mut section, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
        o=- 1 2 IN IP4 0.0.0.0\r\n\
        s=-\r\n\
        a=group:BUNDLE 0 1\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
        a=mid:0\r\n\
        a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
        a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
        a=recvonly\r\n\
        a=rtcp-fb:96 transport-cc\r\n\
        a=rtcp-fb:96 nack\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
        a=mid:1\r\n\
        a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
        a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
        a=sendonly\r\n\
        a=rtcp-fb:96 transport-cc\r\n\
        a=rtcp-fb:96 nack\r\n";

    #[test]
    fn transport_cc_goes_from_the_sending_m_lines_only() {
        let out = without_send_twcc(OFFER);
        let (session_and_recv, send) = out.split_once("a=mid:1").expect("two m-lines");
        // The m-line the browser publishes on keeps it, and its feedback.
        assert!(session_and_recv.contains(TRANSPORT_CC), "{out}");
        assert!(
            session_and_recv.contains("a=rtcp-fb:96 transport-cc"),
            "{out}"
        );
        // The one the node sends on has neither; everything else stays, in order.
        assert!(!send.contains(TRANSPORT_CC), "{out}");
        assert!(!send.contains("transport-cc"), "{out}");
        for kept in ["sdes:mid", "a=sendonly", "a=rtcp-fb:96 nack"] {
            assert!(send.contains(kept), "{kept}: {out}");
        }
        assert_eq!(out.lines().count(), OFFER.lines().count() - 2);
        assert!(out.ends_with("\r\n") && !out.contains("\r\n\r\n"));
    }

    #[test]
    fn an_sdp_with_no_sending_m_line_is_unchanged() {
        let recv_only = OFFER.replace("a=sendonly", "a=recvonly");
        assert_eq!(without_send_twcc(&recv_only), recv_only);
    }
}

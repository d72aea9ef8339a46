//! Every parser of tokens and envelopes against mutated and random input: never a panic,
//! always an error or a document whose signature check fails. A deterministic stand-in for
//! a fuzzer that builds on stable Rust in CI (same seed, same inputs, every run).

use veche_trust::{
    check_admission, decode_token, encode_token, Invite, Keypair, MeetingDoc, Policy, Role, Signed,
    TrustError,
};

/// xorshift64*: small, seedable, good enough to pick bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(4) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out.remove(i);
            }
            2 => {
                let i = rng.below(out.len() + 1);
                out.insert(i, rng.next() as u8);
            }
            _ => {
                let i = rng.below(out.len() + 1);
                out.truncate(i);
            }
        }
    }
    out
}

#[test]
fn mutated_tokens_never_panic_and_never_forge() {
    let host = Keypair::from_secret(&[1; 32]);
    let meeting = host.sign(MeetingDoc {
        id: "k3x-9qa-7mf".into(),
        title: "Physics 7B".into(),
        host: host.public(),
        policy: Policy::InviteOnly,
        lobby: false,
        created_ms: 0,
        ends_ms: None,
    });
    let invite = host.sign(Invite {
        meeting: "k3x-9qa-7mf".into(),
        id: "i1".into(),
        role: Role::Speaker,
        expires_ms: u64::MAX,
        max_uses: None,
        invitee: None,
        parent: None,
    });
    let token = encode_token(&invite);
    let json = serde_json::to_vec(&invite).expect("json");
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let mut verified = 0;
    for round in 0..20_000 {
        // Half the rounds mutate the base64 text, half the JSON inside it.
        let text = if round % 2 == 0 {
            String::from_utf8_lossy(&mutate(&mut rng, token.as_bytes())).into_owned()
        } else {
            base64_url(&mutate(&mut rng, &json))
        };
        match decode_token::<Signed<Invite>>(&text) {
            Ok(inv) if inv == invite => {}
            Ok(inv) => {
                // It parsed but differs: the signature must not hold, or it must not grant.
                if inv.verify().is_ok() {
                    verified += 1;
                    assert_eq!(inv.body, invite.body, "a different body verified: {text}");
                }
            }
            Err(TrustError::Malformed(_)) => {}
            Err(other) => panic!("unexpected error {other:?} for {text}"),
        }
        // Whatever parses admits nobody beyond what the original invite grants.
        if let Ok(inv) = decode_token::<Signed<Invite>>(&text) {
            let stranger = Keypair::from_secret(&[9; 32]).public();
            if let Ok(role) =
                check_admission(&meeting.body, &stranger, Some(&inv), 1, &mut |_| Ok(()))
            {
                assert_eq!((role, &inv.body), (Role::Speaker, &invite.body), "{text}");
            }
        }
        // The other envelopes' parsers on the same garbage.
        let _ = decode_token::<Signed<MeetingDoc>>(&text);
    }
    // Only changes that leave the signed content alone (e.g. base64 padding bits) verify.
    println!("{verified} mutated tokens still verified, all with the original body");
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

//! A meeting's attendance, through a real node: after joins, leaves and a rejoin, the CSV
//! lists each person once per stay with the right times (±2 s); the host has it over their
//! socket, a participant who is not the host is refused with the reason, and the node's
//! operator has the same over loopback HTTP (`veche attendance`); it survives a kill -9 of
//! the node; a person attached to another node is listed with that node.
//!
//! Raw clients (signaling sockets with real keys), no browser: the roster is what counts.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::raw::*;
use veche_trust::{Keypair, Policy};

/// One stay as the CSV lists it: name, key fingerprint, node, role, joined, left (ms).
#[derive(Debug)]
struct Row {
    name: String,
    key: String,
    node: String,
    role: String,
    joined: u64,
    left: Option<u64>,
}

/// RFC 3339 UTC (`2026-12-03T09:05:00Z`) as ms since the epoch.
fn ms(t: &str) -> u64 {
    let p = |r: std::ops::Range<usize>| t[r].parse::<i64>().expect("a number in the time");
    let (y, mo, d) = (p(0..4), p(5..7), p(8..10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + p(11..13) * 3600 + p(14..16) * 60 + p(17..19);
    secs as u64 * 1000
}

fn rows(csv: &str) -> Vec<Row> {
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("name,key,node,role,joined,left,minutes"),
        "{csv}"
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 7, "{l}");
            Row {
                name: f[0].into(),
                key: f[1].into(),
                node: f[2].into(),
                role: f[3].into(),
                joined: ms(f[4]),
                left: (!f[5].is_empty()).then(|| ms(f[5])),
            }
        })
        .collect()
}

fn near(got: u64, want: u64, what: &str) {
    assert!(
        got.abs_diff(want) <= 2_000,
        "{what}: {got} is not within 2 s of {want}"
    );
}

/// The attendance the host's socket gets when it asks.
async fn ask(ws: &mut Ws) -> Value {
    send(ws, json!({"type": "attendance"})).await;
    loop {
        let v = next(ws).await.expect("an answer to the attendance");
        if v["type"] == "attendance" || v["type"] == "error" {
            return v;
        }
    }
}

/// What `veche attendance` prints for `meeting`, on the node at `port`.
fn operator(port: u16, meeting: &str) -> Result<String, String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_veche"))
        .args([
            "attendance",
            meeting,
            "--http",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .expect("run veche attendance");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stay_is_listed_once_with_its_times_for_the_host_only() {
    let (node, dir) = start_node("attendance", free_udp_port()).await;
    let port = node.http_port;
    let host = Keypair::from_secret(&[1; 32]);
    let (bob, cy) = (
        Keypair::from_secret(&[2; 32]),
        Keypair::from_secret(&[3; 32]),
    );
    let id = signed_meeting(port, &host, Policy::Anyone).await;

    let t_ada = now_ms();
    let (mut ada, w) = joined(port, &host, &id, "Ada", None).await;
    assert_eq!(w["type"], "welcome", "{w}");
    let t_bob = now_ms();
    let (mut bob_ws, w) = joined(port, &bob, &id, "Bob", None).await;
    assert_eq!(w["type"], "welcome", "{w}");
    let t_cy = now_ms();
    let (cy_ws, w) = joined(port, &cy, &id, "Cy", None).await;
    assert_eq!(w["type"], "welcome", "{w}");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Bob is not the host: refused, with the reason, and given nothing.
    send(&mut bob_ws, json!({"type": "attendance"})).await;
    expect_refusal(&mut bob_ws, "not_allowed", false, "only the meeting's host").await;

    // Bob leaves and comes back; Cy leaves.
    drop(bob_ws);
    let t_bob_left = now_ms();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t_bob_again = now_ms();
    let (_bob_again, w) = joined(port, &bob, &id, "Bob", None).await;
    assert_eq!(w["type"], "welcome", "{w}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(cy_ws);
    let t_cy_left = now_ms();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let got = ask(&mut ada).await;
    assert_eq!(got["type"], "attendance", "{got}");
    assert_eq!(got["file"], format!("attendance-{id}.csv"));
    let csv = got["csv"].as_str().expect("csv").to_owned();
    let r = rows(&csv);
    let names: Vec<&str> = r.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["Ada", "Bob", "Cy", "Bob"], "{csv}");
    let want = [
        (t_ada, None, "host", &host),
        (t_bob, Some(t_bob_left), "speaker", &bob),
        (t_cy, Some(t_cy_left), "speaker", &cy),
        (t_bob_again, None, "speaker", &bob),
    ];
    for (row, (joined_at, left_at, role, key)) in r.iter().zip(want) {
        near(row.joined, joined_at, &format!("{} joined", row.name));
        match (row.left, left_at) {
            (Some(l), Some(w)) => near(l, w, &format!("{} left", row.name)),
            (None, None) => {}
            (l, w) => panic!("{}: left {l:?}, expected {w:?}: {csv}", row.name),
        }
        assert_eq!(row.role, role, "{csv}");
        assert_eq!(row.key, key.public().fingerprint(), "{csv}");
        assert_eq!(row.node, "this node", "{csv}");
    }

    // The operator, on the node's machine, has the same (and a stranger's id gets nothing).
    let printed = operator(port, &id).expect("veche attendance");
    assert_eq!(printed, csv);
    let link = format!("http://localhost:{port}/m/{id}#invite=x");
    assert_eq!(operator(port, &link).expect("by link"), csv);
    let unknown = operator(port, "zzz-zzz-zzz").expect_err("unknown meeting");
    assert!(unknown.contains("unknown_meeting"), "{unknown}");

    // Acknowledged to nobody, yet written at once: a kill -9 keeps it (the open stays stay
    // open: the node cannot know when they ended).
    node.kill().await;
    let node = start_node_in(&dir, free_udp_port()).await;
    let after = operator(node.http_port, &id).expect("after a kill -9");
    assert_eq!(after, csv);
    node.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_at_another_node_is_listed_with_that_node() {
    let TwoNodes {
        dir, a, a_id, b, ..
    } = two_nodes("att-nodes").await;
    let b_id = node_id_of(b.http_port).await;
    let host = Keypair::from_secret(&[1; 32]);
    let rae = Keypair::from_secret(&[4; 32]);
    let id = signed_meeting(a.http_port, &host, Policy::Anyone).await;
    learn_meeting(b.http_port, &id, &a_id, &host).await;
    let (_ada, w) = joined(a.http_port, &host, &id, "Ada", None).await;
    assert_eq!(w["type"], "welcome", "{w}");
    let (rae_ws, w) = joined(b.http_port, &rae, &id, "Rae", None).await;
    assert_eq!(w["type"], "welcome", "{w}");

    // A lists Rae once B announced her, attached to B; once she leaves, with her leaving.
    let listed = |want_left: bool| {
        let id = id.clone();
        let b_id = b_id.clone();
        let port = a.http_port;
        async move {
            for _ in 0..100 {
                let csv = operator(port, &id).expect("attendance at A");
                let r = rows(&csv);
                if let Some(rae) = r.iter().find(|r| r.name == "Rae") {
                    if rae.left.is_some() == want_left {
                        assert_eq!(rae.node, b_id, "{csv}");
                        assert_eq!(rae.role, "speaker", "{csv}");
                        let ada = r.iter().find(|r| r.name == "Ada").expect("Ada");
                        assert_eq!(ada.node, "this node", "{csv}");
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            panic!("Rae (left: {want_left}) never listed at A");
        }
    };
    listed(false).await;
    drop(rae_ws);
    listed(true).await;
    a.kill().await;
    b.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}

//! `veche join`: a participant on the command line whose key is a file. Against a real node
//! and a real browser: it joins the host's meeting, shows up at the host with the key file's
//! fingerprint, receives the host's camera and microphone over WebRTC, says something in the
//! chat; the host removes it, and the same key file cannot come back, while a new file can.
//!
//! Runs as root (the node and the browser live in a network namespace).

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::{click_row, host_starts, Lab};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// Start `veche join`; its stdout lines come through the receiver.
fn join(
    lab: &Lab,
    link: &str,
    key: &Path,
    name: &str,
    extra: &[&str],
) -> (tokio::process::Child, mpsc::UnboundedReceiver<String>) {
    let key = key.to_str().expect("key path");
    let mut args = vec!["join", link, "--key", key, "--name", name];
    args.extend_from_slice(extra);
    let mut child = lab
        .veche(&args)
        .stderr(Stdio::null())
        .spawn()
        .expect("veche join");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(out).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            println!("cli | {l}");
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The first line (within `limit`) for which `f` gives something.
async fn line<T>(
    rx: &mut mpsc::UnboundedReceiver<String>,
    what: &str,
    limit: Duration,
    mut f: impl FnMut(&str) -> Option<T>,
) -> T {
    let end = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some(l)) => {
                if let Some(v) = f(&l) {
                    return v;
                }
            }
            Ok(None) => panic!("veche join ended before {what}"),
            Err(_) => panic!("no {what} from veche join in {limit:?}"),
        }
    }
}

/// Frames received from `who`'s `source`, from a "receiving: ..." line.
fn frames(l: &str, who: &str, source: &str) -> Option<u64> {
    let rest = l.strip_prefix("receiving: ")?;
    rest.split("; ").find_map(|t| {
        let t = t.strip_prefix(&format!("{who} {source} "))?;
        t.split(' ').next()?.parse().ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_participant_joins_receives_media_and_its_key_file_is_who_it_is() {
    let lab = Lab::new("cli");
    let node = lab.local_node().await;
    let base = node.base();
    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    let path = host_starts(&mut ada, "Terminal class", &[], "Ada").await;
    let link = format!("{base}{path}");
    let key = lab.dir().join("keys/terminal.key");

    let (mut cli, mut rx) = join(
        &lab,
        &link,
        &key,
        "Term",
        &["--say", "hello from a terminal"],
    );
    let fp = line(&mut rx, "its key", Duration::from_secs(20), |l| {
        l.strip_prefix("key ")
            .and_then(|r| r.split("fingerprint ").nth(1))
            .map(str::to_owned)
    })
    .await;
    line(&mut rx, "joined", Duration::from_secs(20), |l| {
        l.starts_with("joined \"Terminal class\" as speaker")
            .then_some(())
    })
    .await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key)
            .expect("key file")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "the key file is private");
    }

    // The host sees it, with the key file's fingerprint, and its chat message.
    let shown = ada
        .wait_for(
            "Term in Ada's list with a key",
            "(window.veche && veche.state().participants.find(p => p.name === 'Term' && p.fp)?.fp) || null",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        shown,
        fp.as_str(),
        "the fingerprint Ada sees is the key file's"
    );
    ada.wait_for(
        "the terminal's chat message at Ada",
        "veche.state().chat.some(m => m.name === 'Term' && m.text === 'hello from a terminal') || null",
        Duration::from_secs(20),
    )
    .await;

    // Ada's camera and microphone arrive at the terminal, and keep arriving.
    let first = line(
        &mut rx,
        "Ada's camera frames",
        Duration::from_secs(30),
        |l| frames(l, "Ada", "camera").filter(|&n| n > 0),
    )
    .await;
    let later = line(
        &mut rx,
        "more of Ada's camera",
        Duration::from_secs(10),
        |l| frames(l, "Ada", "camera").filter(|&n| n > first),
    )
    .await;
    let audio = line(&mut rx, "Ada's microphone", Duration::from_secs(10), |l| {
        frames(l, "Ada", "mic").filter(|&n| n > 0)
    })
    .await;
    println!("camera frames {first} → {later}, microphone packets {audio}");

    // The host removes the terminal: the node tells it, and it ends refused.
    click_row(&mut ada, "Term", "remove", false).await;
    let status = tokio::time::timeout(Duration::from_secs(20), cli.wait())
        .await
        .expect("veche join exits after its removal")
        .expect("status");
    assert_eq!(status.code(), Some(2), "a removed participant exits with 2");

    // The same key file cannot come back; it says why.
    let (mut again, mut rx) = join(&lab, &link, &key, "Term again", &[]);
    line(&mut rx, "the refusal", Duration::from_secs(20), |l| {
        (l.starts_with("refused:") && l.contains("removed you")).then_some(())
    })
    .await;
    let status = again.wait().await.expect("status");
    assert_eq!(status.code(), Some(2));

    // Another key file is another person: in.
    let other = lab.dir().join("keys/other.key");
    let (mut fresh, mut rx) = join(&lab, &link, &other, "Newcomer", &["--for", "3"]);
    line(
        &mut rx,
        "the other key joined",
        Duration::from_secs(20),
        |l| l.starts_with("joined").then_some(()),
    )
    .await;
    assert_eq!(fresh.wait().await.expect("status").code(), Some(0));
    ada.close().await;
}

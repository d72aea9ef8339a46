//! Recording a lesson, through a real node and real browsers: the host records ~20 s of a
//! meeting with a camera, a screen share and two people speaking in turn; everyone sees it
//! is recording (and someone joining is asked before anything of theirs is sent); the file
//! plays (ffprobe: one VP8 video and one Opus audio track, the duration recorded ±1 s;
//! ffmpeg decodes every frame without an error; sound in both halves); the host downloads
//! it from the page, nobody else can; a kill -9 mid-recording leaves a file that plays up
//! to the kill. Raw clients check who may start a recording and who may list them.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::raw::*;
use veche_trust::{encode_token, Action, ActionKind, Invite, Keypair, Policy, Role};

/// The `.webm` files the node at `data` keeps for `meeting`, oldest first.
fn files(data: &Path, meeting: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("recordings").join(meeting))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// ffprobe's streams (codec type and name) and duration of `file`.
fn probe(file: &Path) -> (Vec<(String, String)>, f64) {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name:format=duration",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .expect("ffprobe (Debian's ffmpeg; scripts/test installs it)");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("ffprobe's json");
    let streams = v["streams"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| {
                    (
                        s["codec_type"].as_str().unwrap_or("").to_owned(),
                        s["codec_name"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let duration = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    (streams, duration)
}

/// Each video frame's time (s) and size (`WxH`).
fn frame_sizes(file: &Path) -> Vec<(f64, String)> {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "frame=pts_time,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim_end_matches(',').split(',').collect();
            Some((
                f.first()?.parse().ok()?,
                format!("{}x{}", f.get(1)?, f.get(2)?),
            ))
        })
        .collect()
}

/// The time of the last packet in `file`, s.
fn last_packet(file: &Path) -> f64 {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok())
        .fold(0.0, f64::max)
}

/// Decode every frame of `file`: what ffmpeg said at error level (empty: clean). Checks
/// that it decoded as many video frames as the file has. WebRTC video has a variable frame
/// rate: the frames keep their own times (`passthrough`, in the file's time base), as a
/// player shows them; ffmpeg's default would drop frames whose times round together at a
/// guessed constant rate, which says nothing about decoding.
fn decode_errors(file: &Path) -> String {
    let out = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-stats", "-i"])
        .arg(file)
        .args([
            "-fps_mode",
            "passthrough",
            "-enc_time_base",
            "-1",
            "-f",
            "null",
            "-",
        ])
        .output()
        .expect("ffmpeg");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "ffmpeg could not decode {}: {text}",
        file.display()
    );
    let decoded: u64 = text
        .rsplit("frame=")
        .next()
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-count_packets",
            "-show_entries",
            "stream=nb_read_packets",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .expect("ffprobe");
    let packets: u64 = String::from_utf8_lossy(&probe.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    println!("{}: {decoded} frames decoded of {packets}", file.display());
    assert!(
        packets > 50 && decoded == packets,
        "{decoded} frames decoded of {packets} in the file"
    );
    // What is left is what was said at error level, less the progress lines.
    text.lines()
        .filter(|l| !l.contains("frame=") && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Mean audio volume (dB) of `file` from `from` for `len` seconds.
fn volume(file: &Path, from: f64, len: f64) -> f64 {
    let out = std::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "info",
            "-ss",
            &format!("{from:.2}"),
            "-t",
            &format!("{len:.2}"),
            "-i",
        ])
        .arg(file)
        .args(["-vn", "-af", "volumedetect", "-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find_map(|l| l.split("mean_volume:").nth(1))
        .and_then(|v| v.trim().trim_end_matches("dB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no volume measured: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_lesson_plays_with_the_stage_and_both_voices_and_only_the_host_downloads_it() {
    use support::{click, host_starts, wait_text, Lab};
    let lab = Lab::new("rec");
    let node = lab.local_node().await;
    let base = node.base();
    let data = lab.dir().join("data");
    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    let path = host_starts(&mut ada, "Chemistry", &[], "Ada").await;
    let meeting = path.trim_start_matches("/m/").to_owned();
    let mut bob = lab
        .browser(&format!("{base}{path}?name=Bob&autojoin=1"), &[])
        .await;
    for (b, who, other) in [(&mut ada, "Ada", "Bob"), (&mut bob, "Bob", "Ada")] {
        b.wait_for(
            &format!("{who} decoding {other}"),
            &format!("veche.stats().then(s => s.inbound.some(i => i.name === {other:?} && i.source === 'camera' && i.framesDecoded > 0) || null)"),
            Duration::from_secs(60),
        )
        .await;
    }
    // Ada speaks first: Bob's microphone is off.
    click(&mut bob, "Bob's microphone", "#btn-mic").await;

    click(
        &mut ada,
        "the record button",
        ".people-list button[data-action=\"record\"]",
    )
    .await;
    let started = Instant::now();
    for (b, who) in [(&mut ada, "Ada"), (&mut bob, "Bob")] {
        b.wait_for(
            &format!("{who} sees the meeting is recorded"),
            "(veche.state().recording && !document.getElementById('recording-bar').hidden && document.getElementById('recording-bar').textContent.includes('Recording')) || null",
            Duration::from_secs(10),
        )
        .await;
    }
    wait_text(&mut bob, "Bob told who records", "started by Ada").await;
    // Bob, in the meeting when it started, is asked to stay (Ada, who started it, is not).
    click(&mut bob, "Bob stays", "[data-consent=join]").await;
    let asked = ada
        .eval("document.querySelector('[data-consent]') !== null")
        .await
        .expect("Ada's page");
    assert_eq!(
        asked,
        json!(false),
        "the host was asked about her own recording"
    );

    // Someone joining now is asked before anything of theirs goes out.
    let mut cy = lab
        .browser(&format!("{base}{path}?name=Cy&autojoin=1"), &[])
        .await;
    cy.wait_for(
        "Cy asked about the recording",
        "document.querySelector('[data-consent=join]') ? true : null",
        Duration::from_secs(30),
    )
    .await;
    let sent = cy
        .eval("veche.stats().then(s => s.outbound.reduce((a, o) => a + (o.bytesSent || 0), 0))")
        .await
        .expect("Cy's stats");
    assert_eq!(
        sent.as_u64(),
        Some(0),
        "Cy sent media before agreeing: {sent}"
    );
    click(&mut cy, "Cy leaves", "[data-consent=leave]").await;
    cy.close().await;

    // Halfway: Bob speaks and shares his screen, Ada is quiet.
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(started.elapsed())).await;
    let turn = started.elapsed().as_secs_f64();
    click(&mut ada, "Ada's microphone", "#btn-mic").await;
    click(&mut bob, "Bob's microphone", "#btn-mic").await;
    click(&mut bob, "Bob's screen", "#btn-screen").await;
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(started.elapsed())).await;
    click(
        &mut ada,
        "stop recording",
        ".people-list button[data-action=\"record\"]",
    )
    .await;
    let recorded = started.elapsed().as_secs_f64();
    for (b, who) in [(&mut ada, "Ada"), (&mut bob, "Bob")] {
        b.wait_for(
            &format!("{who} sees the recording stopped"),
            "(!veche.state().recording && document.getElementById('recording-bar').hidden) || null",
            Duration::from_secs(10),
        )
        .await;
    }

    // The file plays in an ordinary player.
    let file = support::until("the recording file", Duration::from_secs(10), || {
        let f = files(&data, &meeting);
        async move { (f.len() == 1).then(|| f[0].clone()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // the writer's last blocks
    let (streams, duration) = probe(&file);
    let size = std::fs::metadata(&file).map_or(0, |m| m.len());
    println!(
        "recording {}: {streams:?}, {duration:.2} s of {recorded:.2} s recorded, {size} bytes ({:.0} kbit/s, {:.0} MB an hour)",
        file.display(),
        size as f64 * 8.0 / duration.max(0.1) / 1000.0,
        size as f64 / duration.max(0.1) * 3600.0 / 1e6
    );
    assert_eq!(
        streams,
        [
            ("video".to_owned(), "vp8".to_owned()),
            ("audio".to_owned(), "opus".to_owned())
        ]
    );
    assert!(
        (duration - recorded).abs() <= 1.0,
        "{duration:.2} s in the file, {recorded:.2} s recorded"
    );
    let errors = decode_errors(&file);
    assert!(errors.trim().is_empty(), "decoding reported: {errors}");
    // The picture: a camera while Ada spoke, Bob's screen share once he shared it.
    let sizes = frame_sizes(&file);
    let during = |from: f64, to: f64| {
        let mut v: Vec<&str> = sizes
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, s)| s.as_str())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let (camera, screen) = (during(1.0, turn - 0.5), during(turn + 3.0, duration));
    println!("pictures: {camera:?} before the share, {screen:?} after");
    // (A camera's size may step down when the machine is busy; the share's stays.)
    assert!(
        !camera.is_empty() && screen.len() == 1 && !camera.contains(&screen[0]),
        "the stage did not move to the screen share: {camera:?} then {screen:?}"
    );
    let (first, second) = (
        volume(&file, 1.0, turn - 2.0),
        volume(&file, turn + 1.5, duration - turn - 2.5),
    );
    println!("mean volume: {first:.1} dB while Ada spoke, {second:.1} dB while Bob did");
    assert!(
        first > -60.0 && second > -60.0,
        "a speaker is missing: {first} dB, {second} dB"
    );

    // The host downloads it from the page.
    click(
        &mut ada,
        "the recordings button",
        ".people-list button[data-action=\"recordings\"]",
    )
    .await;
    let url = ada
        .wait_for(
            "the host's download link",
            "(() => { const a = document.querySelector('a[data-recording]'); return a ? a.getAttribute('href') : null; })()",
            Duration::from_secs(10),
        )
        .await;
    let url = url.as_str().expect("a link").to_owned();
    let size = std::fs::metadata(&file).expect("file").len();
    let got = ada
        .eval(&format!(
            "fetch({url:?}).then(r => r.ok ? r.arrayBuffer().then(b => b.byteLength) : -r.status)"
        ))
        .await
        .expect("download");
    assert_eq!(got.as_u64(), Some(size), "the host's download");
    // Nobody else: Bob, without the host's link, or guessing one.
    let bare = url.split('?').next().unwrap_or_default().to_owned();
    for try_url in [
        bare.clone(),
        format!("{bare}?ticket=00112233445566778899aabbccddeeff"),
    ] {
        let refused = bob
            .eval(&format!(
                "fetch({try_url:?}).then(r => r.json().then(j => [r.status, j.error]))"
            ))
            .await
            .expect("Bob's try");
        assert_eq!(refused, json!([403, "not_allowed"]), "{try_url}");
    }

    // kill -9 during a recording: the file up to the kill plays.
    click(
        &mut ada,
        "record again",
        ".people-list button[data-action=\"record\"]",
    )
    .await;
    ada.wait_for(
        "recording again",
        "veche.state().recording ? true : null",
        Duration::from_secs(10),
    )
    .await;
    let again = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let lived = again.elapsed().as_secs_f64();
    node.kill().await;
    let killed = files(&data, &meeting);
    assert_eq!(killed.len(), 2, "{killed:?}");
    let (streams, _) = probe(&killed[1]);
    let kept = last_packet(&killed[1]);
    println!("killed recording: {streams:?}, {kept:.2} s kept of {lived:.2} s");
    assert_eq!(
        streams,
        [
            ("video".to_owned(), "vp8".to_owned()),
            ("audio".to_owned(), "opus".to_owned())
        ]
    );
    assert!(
        kept >= lived - 2.0,
        "{kept:.2} s kept of {lived:.2} s (a kill loses at most the last seconds)"
    );
    let errors = decode_errors(&killed[1]);
    assert!(
        errors.trim().is_empty(),
        "decoding the killed recording reported: {errors}"
    );
    // Started again, the node gives the cut-off file its duration.
    let node = lab.local_node().await;
    let (_, duration) = probe(&killed[1]);
    assert!(
        (duration - kept).abs() < 0.5,
        "after the restart the file says {duration:.2} s, its packets {kept:.2} s"
    );
    node.kill().await;
    // The operator lists and exports them on the node.
    let out = lab
        .veche(&[
            "recordings",
            &meeting,
            "--data-dir",
            data.to_str().unwrap_or_default(),
        ])
        .output()
        .await
        .expect("veche recordings");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let name = killed[1]
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    assert!(listed.contains(&name), "{listed}");
    let copy = lab.dir().join("exported.webm");
    let out = lab
        .veche(&[
            "recordings",
            &meeting,
            "--export",
            &name,
            "--out",
            copy.to_str().unwrap_or_default(),
            "--data-dir",
            data.to_str().unwrap_or_default(),
        ])
        .output()
        .await
        .expect("veche recordings --export");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&copy).ok(), std::fs::read(&killed[1]).ok());
}

/// `signer` signs `kind` of `meeting` and sends it on `ws`.
async fn act(ws: &mut Ws, signer: &Keypair, meeting: &str, kind: ActionKind) {
    let action = action(signer, meeting, kind);
    send(ws, json!({"type": "moderate", "action": action})).await;
}

fn action(signer: &Keypair, meeting: &str, kind: ActionKind) -> String {
    encode_token(&signer.sign(Action {
        meeting: meeting.into(),
        kind,
        target: signer.public(),
        at_ms: now_ms(),
        authority: None,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_host_or_a_moderator_records_and_only_the_host_lists_recordings() {
    let (node, dir) = start_node("recrules", free_udp_port()).await;
    let port = node.http_port;
    let host = Keypair::from_secret(&[1; 32]);
    let bob = Keypair::from_secret(&[2; 32]);
    let id = signed_meeting(port, &host, Policy::Anyone).await;
    let (mut hs, w) = joined(port, &host, &id, "Host", None).await;
    assert_eq!(w["type"], "welcome", "{w}");
    assert!(w.get("recording").is_none(), "{w}");
    let (mut bs, w) = joined(port, &bob, &id, "Bob", None).await;
    assert_eq!(w["type"], "welcome", "{w}");

    // A participant cannot start one, nor sign one in the host's name.
    act(&mut bs, &bob, &id, ActionKind::StartRecording).await;
    expect_refusal(&mut bs, "not_allowed", false, "moderator").await;
    let mut forged: Value = serde_json::from_str(
        &String::from_utf8(
            base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                action(&bob, &id, ActionKind::StartRecording),
            )
            .expect("b64"),
        )
        .expect("utf8"),
    )
    .expect("json");
    forged["key"] = json!(veche_trust::encode_key(&host.public()));
    let forged = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        forged.to_string(),
    );
    send(&mut bs, json!({"type": "moderate", "action": forged})).await;
    expect_refusal(&mut bs, "not_allowed", false, "signature does not match").await;
    assert!(
        std::fs::read_dir(dir.join("recordings")).map_or(true, |mut d| d.next().is_none()),
        "a refused start made a file"
    );

    // The host starts it: everyone is told, and a joiner's welcome says so.
    act(&mut hs, &host, &id, ActionKind::StartRecording).await;
    let told = next_of(&mut bs, "recording").await;
    assert_eq!(
        (told["on"].as_bool(), told["by"].as_str()),
        (Some(true), Some("Host")),
        "{told}"
    );
    let cy = Keypair::from_secret(&[3; 32]);
    let (_cs, w) = joined(port, &cy, &id, "Cy", None).await;
    assert_eq!(w["recording"]["by"], "Host", "{w}");
    // Twice is refused with the reason.
    tokio::time::sleep(Duration::from_millis(5)).await;
    act(&mut hs, &host, &id, ActionKind::StartRecording).await;
    expect_refusal(&mut hs, "not_allowed", false, "recorded already").await;

    // Only the host lists them: not Bob, nor a moderator (who may start and stop one).
    send(&mut bs, json!({"type": "recordings"})).await;
    expect_refusal(&mut bs, "not_allowed", false, "host").await;
    let mo = Keypair::from_secret(&[6; 32]);
    let grant = host.sign(Invite {
        meeting: id.clone(),
        id: "mo-1".into(),
        role: Role::Moderator,
        expires_ms: now_ms() + 3_600_000,
        max_uses: None,
        invitee: Some(mo.public()),
        parent: None,
    });
    let (mut ms, w) = joined(port, &mo, &id, "Mo", Some(&encode_token(&grant))).await;
    assert_eq!(w["role"], "moderator", "{w}");
    send(&mut ms, json!({"type": "recordings"})).await;
    expect_refusal(&mut ms, "not_allowed", false, "host").await;
    // The moderator stops the host's recording, and starts one (the host stops that).
    let by_mo = |kind| {
        encode_token(&mo.sign(Action {
            meeting: id.clone(),
            kind,
            target: mo.public(),
            at_ms: now_ms(),
            authority: Some(Box::new(grant.clone())),
        }))
    };
    send(
        &mut ms,
        json!({"type": "moderate", "action": by_mo(ActionKind::StopRecording)}),
    )
    .await;
    let told = next_of(&mut bs, "recording").await;
    assert_eq!(told["on"], false, "{told}");
    send(
        &mut ms,
        json!({"type": "moderate", "action": by_mo(ActionKind::StartRecording)}),
    )
    .await;
    let told = next_of(&mut bs, "recording").await;
    assert_eq!(
        (told["on"].as_bool(), told["by"].as_str()),
        (Some(true), Some("Mo")),
        "{told}"
    );
    act(&mut hs, &host, &id, ActionKind::StopRecording).await;
    let told = next_of(&mut bs, "recording").await;
    assert_eq!(told["on"], false, "{told}");
    send(&mut hs, json!({"type": "recordings"})).await;
    let list = next_of(&mut hs, "recordings").await;
    let list = list["list"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 2, "the host's and the moderator's: {list:?}");
    assert!(
        list[0]["url"]
            .as_str()
            .is_some_and(|u| u.contains("ticket=")),
        "{list:?}"
    );

    // A recording nobody is left in stops by itself: whoever comes back is not told of it.
    tokio::time::sleep(Duration::from_millis(5)).await;
    act(&mut hs, &host, &id, ActionKind::StartRecording).await;
    let told = next_of(&mut bs, "recording").await;
    assert_eq!(told["on"], true, "{told}");
    drop((hs, bs, _cs, ms));
    let mut back = None;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (ws, w) = joined(port, &host, &id, "Host", None).await;
        if w.get("recording").is_none() {
            back = Some(ws);
            break;
        }
    }
    assert!(
        back.is_some(),
        "the recording went on with nobody in the meeting"
    );
    assert_eq!(files(&dir.join("data"), &id).len(), 3);

    // Once the meeting is over (nobody joins it), its host has them with their key's proof.
    let mut hs = back.expect("the host");
    act(&mut hs, &host, &id, ActionKind::End).await;
    let after_end = |who: Keypair, forge: bool| {
        let id = id.clone();
        async move {
            let mut ws = ws(port).await;
            let (node, nonce) = challenge(&mut ws).await;
            let sig = serde_json::to_value(who.sign_challenge(&node, &id, &nonce)).expect("sig");
            let mut sig = sig.as_str().expect("sig").to_owned();
            if forge {
                let mut b = sig.into_bytes();
                b[10] = if b[10] == b'A' { b'B' } else { b'A' };
                sig = String::from_utf8(b).expect("ascii");
            }
            let key = veche_trust::encode_key(&who.public());
            send(
                &mut ws,
                json!({"type": "recordings", "meeting": id, "key": key, "sig": sig}),
            )
            .await;
            ws
        }
    };
    let mut ws1 = after_end(Keypair::from_secret(&[1; 32]), false).await;
    let list = next_of(&mut ws1, "recordings").await;
    assert_eq!(list["list"].as_array().map(Vec::len), Some(3), "{list}");
    let mut ws2 = after_end(Keypair::from_secret(&[2; 32]), false).await;
    expect_refusal(&mut ws2, "not_allowed", false, "host").await;
    let mut ws3 = after_end(Keypair::from_secret(&[1; 32]), true).await;
    expect_refusal(&mut ws3, "not_allowed", false, "proof was refused").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_ending_the_meeting_the_host_downloads_its_recordings_from_the_end_screen() {
    use support::{click, host_starts, Lab};
    let lab = Lab::new("recend");
    let node = lab.local_node().await;
    let base = node.base();
    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    host_starts(&mut ada, "Biology", &[], "Ada").await;
    click(
        &mut ada,
        "the record button",
        ".people-list button[data-action=\"record\"]",
    )
    .await;
    ada.wait_for(
        "recording",
        "veche.state().recording ? true : null",
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    click(
        &mut ada,
        "end for everyone",
        ".people-list button[data-action=\"end\"]",
    )
    .await;
    ada.wait_for(
        "the end screen's download button",
        "(() => { const b = [...document.querySelectorAll('#fatal button')].find(b => b.textContent === 'Download the recordings'); if (!b) return null; b.click(); return true; })()",
        Duration::from_secs(20),
    )
    .await;
    let url = ada
        .wait_for(
            "the recording's link",
            "(() => { const a = document.querySelector('a[data-recording]'); return a ? a.getAttribute('href') : null; })()",
            Duration::from_secs(20),
        )
        .await;
    let url = url.as_str().expect("a link").to_owned();
    let got = ada
        .eval(&format!(
            "fetch({url:?}).then(r => r.ok ? r.arrayBuffer().then(b => b.byteLength) : -r.status)"
        ))
        .await
        .expect("download");
    assert!(
        got.as_i64().is_some_and(|n| n > 10_000),
        "the download: {got}"
    );
    node.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_at_one_node_is_shown_at_the_others_which_record_nothing() {
    let TwoNodes {
        dir, a, a_id, b, ..
    } = two_nodes("rec-nodes").await;
    let host = Keypair::from_secret(&[1; 32]);
    let rae = Keypair::from_secret(&[4; 32]);
    let id = signed_meeting(a.http_port, &host, Policy::Anyone).await;
    let (mut ada, w) = joined(a.http_port, &host, &id, "Ada", None).await;
    assert_eq!(w["type"], "welcome", "{w}");
    // A records before B even knows the meeting: B learns it from A, with A's list.
    act(&mut ada, &host, &id, ActionKind::StartRecording).await;
    next_of(&mut ada, "recording").await;
    learn_meeting(b.http_port, &id, &a_id, &host).await;
    let (mut rae_ws, w) = joined(b.http_port, &rae, &id, "Rae", None).await;
    assert_eq!(w["type"], "welcome", "{w}");
    if w["recording"]["by"] != "Ada" {
        // Her node learned of it after her welcome: she is told as soon as it knows.
        let told = tokio::time::timeout(Duration::from_secs(10), next_of(&mut rae_ws, "recording"))
            .await
            .expect("Rae is told of A's recording");
        assert_eq!(
            (told["on"].as_bool(), told["by"].as_str()),
            (Some(true), Some("Ada")),
            "{told}"
        );
    }
    let sam = Keypair::from_secret(&[5; 32]);
    let (mut sam_ws, w) = joined(b.http_port, &sam, &id, "Sam", None).await;
    assert_eq!(
        w["recording"]["by"], "Ada",
        "a joiner at B is told in the welcome: {w}"
    );

    act(&mut ada, &host, &id, ActionKind::StopRecording).await;
    for ws in [&mut rae_ws, &mut sam_ws] {
        let told = next_of(ws, "recording").await;
        assert_eq!(told["on"], false, "{told}");
    }
    let kept = |node: &str| {
        std::fs::read_dir(dir.join(node).join("data").join("recordings").join(&id))
            .map_or(0, |d| d.count())
    };
    support::until("A's file", Duration::from_secs(10), || {
        let n = kept("a");
        async move { (n == 1).then_some(()) }
    })
    .await;
    assert_eq!(kept("b"), 0, "B records nothing: the start was sent to A");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A file system of its own for a node's data, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(tag: &str, mb: u64) -> SmallDisk {
        support::require_root();
        let dir = std::env::temp_dir().join(format!("veche-disk-{tag}-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mount a tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_stops_the_recording_with_words_and_keeps_the_file() {
    let disk = SmallDisk::mount("full", 300);
    let node = start_node_in(&disk.0, free_udp_port()).await;
    let port = node.http_port;
    let host = Keypair::from_secret(&[1; 32]);
    let bob = Keypair::from_secret(&[2; 32]);
    let id = signed_meeting(port, &host, Policy::Anyone).await;
    let (mut hs, _) = joined(port, &host, &id, "Host", None).await;
    let (mut bs, _) = joined(port, &bob, &id, "Bob", None).await;
    act(&mut hs, &host, &id, ActionKind::StartRecording).await;
    let told = next_of(&mut bs, "recording").await;
    assert_eq!(told["on"], true, "{told}");

    // Something else fills the disk: less than 64 MB left.
    let free = veche_node::recordings::free_bytes(&disk.0).expect("statvfs");
    let filler = disk.0.join("filler");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..(free >> 20).saturating_sub(40) {
            f.write_all(&chunk).expect("fill");
        }
    }
    let stopped = tokio::time::timeout(Duration::from_secs(10), next_of(&mut bs, "recording"))
        .await
        .expect("the recording stops within seconds");
    println!("Bob is told: {stopped}");
    assert_eq!(stopped["on"], false, "{stopped}");
    assert!(
        stopped["problem"]
            .as_str()
            .is_some_and(|p| p.contains("disk is nearly full")),
        "{stopped}"
    );
    assert_eq!(
        files(&disk.0.join("data"), &id).len(),
        1,
        "the file is kept"
    );

    // Starting again says how much room there is.
    tokio::time::sleep(Duration::from_millis(5)).await;
    act(&mut hs, &host, &id, ActionKind::StartRecording).await;
    expect_refusal(
        &mut hs,
        "not_allowed",
        false,
        "MB free; a recording needs at least 256 MB",
    )
    .await;
    // The node goes on: Bob still gets what the host says.
    send(&mut hs, json!({"type": "chat", "text": "still here"})).await;
    let said = next_of(&mut bs, "chat").await;
    assert_eq!(said["message"]["text"], "still here", "{said}");
    node.kill().await;
}

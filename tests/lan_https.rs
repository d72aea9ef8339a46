//! A second device on the LAN: a browser in its own network namespace reaches the node over
//! HTTPS at the node's LAN address and publishes its camera to someone on the node's own
//! machine. The node makes its certificate on first start and prints its fingerprint.

mod support;

use std::time::Duration;

use support::Lab;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_over_lan_https_publishes_its_camera() {
    let lab = Lab::new("lan");
    let data = lab.dir().join("data");
    let https = format!("{}:7443", lab.lan_ip);
    let node = lab.lan_node().await;
    let lan_url = format!("https://{https}");
    assert!(
        node.printed.iter().any(|l| l.contains(&lan_url)),
        "node should print its LAN address {lan_url}: {:?}",
        node.printed
    );
    let fingerprint = node
        .printed
        .iter()
        .find_map(|l| l.strip_prefix("certificate fingerprint (SHA-256): "))
        .expect("fingerprint printed")
        .to_owned();
    assert_eq!(fingerprint.len(), 95, "SHA-256 as colon hex: {fingerprint}");
    assert!(data.join("tls-cert.pem").exists());

    // The teacher, on the node's machine, creates the meeting and joins.
    let base = node.base();
    let mut teacher = lab.browser(&format!("{base}/"), &[]).await;
    teacher
        .wait_for(
            "landing",
            "location.href.startsWith('http:') && document.readyState === 'complete'",
            Duration::from_secs(20),
        )
        .await;
    let created = teacher
        .eval("fetch('/api/meetings', {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify({title: 'Class'})}).then(r => r.json())")
        .await
        .expect("create");
    let id = created["id"].as_str().expect("id").to_owned();
    teacher
        .eval(&format!(
            "location.href = '{base}/m/{id}?name=Teacher&autojoin=1'"
        ))
        .await
        .expect("navigate");

    // The student opens the LAN address over HTTPS. The self-signed certificate is accepted
    // the way a person accepts it after checking the fingerprint; nothing else is relaxed:
    // no insecure-origin flag, no loopback candidates.
    let mut student = lab
        .device_browser(
            &format!("{lan_url}/m/{id}?name=Student&autojoin=1"),
            &["--ignore-certificate-errors"],
        )
        .await;
    let secure = student
        .wait_for(
            "the meeting page over HTTPS",
            "location.href.startsWith('https:') && document.readyState === 'complete' && location.protocol",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(secure, "https:");
    assert_eq!(
        student.eval("window.isSecureContext").await.expect("eval"),
        true
    );

    // The student joins; then the teacher decodes the student's camera.
    let joined = student
        .wait_for(
            "the student to join",
            "window.veche && veche.state().joined && veche.state().connection",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(joined, "connected", "{}", student.describe().await);
    teacher
        .wait_for(
            "teacher decoding the student's camera",
            "(async () => { if (!window.veche) return false; const s = await veche.stats(); return s.inbound.some(i => i.name === 'Student' && i.source === 'camera' && i.framesDecoded > 10); })()",
            Duration::from_secs(45),
        )
        .await;
    let sent = student
        .wait_for(
            "student sending video",
            "(async () => { const s = await veche.stats(); const v = s.outbound.find(o => o.source === 'camera'); return v && v.framesEncoded > 10 ? v : null; })()",
            Duration::from_secs(20),
        )
        .await;
    println!("student over LAN HTTPS sent {sent}");
    // The media went to the node's LAN address, not over loopback.
    let remote = student
        .wait_for(
            "the student's selected ICE pair",
            "(async () => { const s = await veche.pc.getStats(); let pair = null; \
              s.forEach(r => { if (r.type === 'transport' && r.selectedCandidatePairId) pair = s.get(r.selectedCandidatePairId); }); \
              const rc = pair && s.get(pair.remoteCandidateId); return rc ? rc.address : null; })()",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        remote,
        lab.lan_ip.as_str(),
        "media should flow to the node's LAN address"
    );
    // Who was in the meeting is the operator's on the node's own machine (and the host's
    // over their socket): the loopback page has it, another device over HTTPS does not.
    let path = format!("/api/meetings/{id}/attendance");
    let teachers = teacher
        .eval(&format!(
            "fetch('{path}').then(async r => r.status + ' ' + await r.text())"
        ))
        .await
        .expect("teacher's fetch");
    let teachers = teachers.as_str().unwrap_or_default().to_owned();
    assert!(
        teachers.starts_with("200 name,key,node,role") && teachers.contains("Student"),
        "{teachers}"
    );
    let students = student
        .eval(&format!(
            "fetch('{path}').then(async r => r.status + ' ' + await r.text())"
        ))
        .await
        .expect("student's fetch");
    let students = students.as_str().unwrap_or_default().to_owned();
    assert!(
        students.starts_with("403") && students.contains("operator_only"),
        "{students}"
    );
    node.kill().await;
}

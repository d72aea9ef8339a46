//! The node's identity survives restarts (also kill -9) and its key file is private.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn veche_id(data: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_veche"))
        .arg("id")
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("run veche id");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn restart_keeps_the_id_and_the_key_is_0600() {
    let dir = std::env::temp_dir().join(format!("veche-identity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let data = dir.join("data");

    let id = veche_id(&data);
    assert!(id.starts_with("12D3KooW"), "a libp2p ed25519 peer id: {id}");
    let mode = std::fs::metadata(data.join("node.key"))
        .expect("key")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    let node = support::raw::start_node_in(&dir, 0).await;
    assert!(
        node.printed
            .iter()
            .any(|l| l == &format!("veche node {id}")),
        "{:?}",
        node.printed
    );
    node.kill().await; // kill -9
    let node = support::raw::start_node_in(&dir, 0).await;
    assert!(
        node.printed
            .iter()
            .any(|l| l == &format!("veche node {id}")),
        "{:?}",
        node.printed
    );
    node.kill().await;
    assert_eq!(veche_id(&data), id);
    std::fs::remove_dir_all(&dir).ok();
}

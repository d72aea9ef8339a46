//! QR codes of meeting and invite links, made in the page (an invite's token must never
//! reach a server). A real decoder (rqrr) reads what the browser drew: the encoder across
//! sizes from one character to a version-40 symbol, and the Invite dialog's codes of the
//! meeting link and of a freshly signed invite link, from the canvas pixels on screen.
//!
//! Runs as root (the browsers live in a network namespace).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{click, host_starts, make_invite, Lab};

/// Decode a grey image (one byte per pixel, dark < 128) and return the texts found.
fn decode(width: usize, height: usize, grey: &[u8]) -> Vec<String> {
    let mut img =
        rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| grey[y * width + x]);
    img.detect_grids()
        .into_iter()
        .filter_map(|g| g.decode().ok().map(|(_, text)| text))
        .collect()
}

/// A symbol as the page returned it (rows of '1' dark / '0' light), drawn at 4 pixels per
/// module with a 4-module quiet zone, decoded.
fn decode_rows(rows: &[Value]) -> Vec<String> {
    let n = rows.len();
    let (scale, quiet) = (4, 4);
    let side = (n + 2 * quiet) * scale;
    let mut grey = vec![255u8; side * side];
    for (y, row) in rows.iter().enumerate() {
        for (x, c) in row.as_str().expect("row").bytes().enumerate() {
            if c == b'1' {
                for dy in 0..scale {
                    for dx in 0..scale {
                        grey[((y + quiet) * scale + dy) * side + (x + quiet) * scale + dx] = 0;
                    }
                }
            }
        }
    }
    decode(side, side, &grey)
}

/// The pixels of the canvas `css` as grey bytes.
async fn canvas_pixels(b: &mut support::Browser, css: &str) -> (usize, usize, Vec<u8>) {
    let v = b
        .eval(&format!(
            "(() => {{ const c = document.querySelector({css:?}); if (!c) return null;
               const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
               let s = ''; for (let i = 0; i < d.length; i += 4) s += d[i] < 128 ? '1' : '0';
               return {{ w: c.width, h: c.height, px: s }}; }})()"
        ))
        .await
        .expect("canvas pixels");
    assert!(v.is_object(), "no canvas {css}: {v}");
    let w = v["w"].as_u64().expect("width") as usize;
    let h = v["h"].as_u64().expect("height") as usize;
    let px: Vec<u8> = v["px"]
        .as_str()
        .expect("pixels")
        .bytes()
        .map(|c| if c == b'1' { 0 } else { 255 })
        .collect();
    assert_eq!(px.len(), w * h);
    (w, h, px)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_codes_of_links_decode_to_the_links() {
    let lab = Lab::new("qr");
    let node = lab.local_node().await;
    let base = node.base();
    let mut ada = lab.browser(&format!("{base}/"), &[]).await;
    host_starts(&mut ada, "Lab 4", &[], "Ada").await;

    // The encoder across sizes: 1 character to the largest symbol (2953 bytes at level L),
    // through version 7 (version blocks) and 10 (16-bit lengths), with UTF-8 text.
    let lengths = [1usize, 14, 15, 60, 150, 300, 470, 800, 1300, 2000, 2900];
    let js = format!(
        "import('/assets/qr.js').then(({{ qrEncode }}) => {lengths:?}.map(n => {{
           let t = 'Zoë\u{2019}s class ' + location.origin + '/m/abc#invite=';
           while (t.length < n) t += String.fromCharCode(33 + (t.length * 7) % 90);
           t = t.slice(0, n);
           const q = qrEncode(t);
           const rows = [];
           for (let y = 0; y < q.size; y++) {{ let r = ''; for (let x = 0; x < q.size; x++) r += q.dark(x, y) ? '1' : '0'; rows.push(r); }}
           return {{ text: t, version: q.version, level: q.level, rows }};
         }}))"
    );
    let symbols = ada.eval(&js).await.expect("encode");
    let symbols = symbols.as_array().expect("symbols");
    let mut versions = Vec::new();
    for s in symbols {
        let text = s["text"].as_str().expect("text");
        let found = decode_rows(s["rows"].as_array().expect("rows"));
        versions.push(format!(
            "{}{}",
            s["version"],
            s["level"].as_str().unwrap_or("?")
        ));
        assert_eq!(
            found,
            vec![text.to_owned()],
            "version {} level {} ({} characters) did not decode to its text",
            s["version"],
            s["level"],
            text.chars().count()
        );
    }
    println!("decoded versions: {versions:?}");
    assert!(versions.iter().any(|v| v.starts_with("40")), "{versions:?}");

    // Too long for any QR code: a clear error, not a broken symbol.
    let too_long = ada
        .eval("import('/assets/qr.js').then(({ qrEncode }) => { try { qrEncode('x'.repeat(3000)); return 'made'; } catch (e) { return String(e.message); } })")
        .await
        .expect("too long");
    assert_eq!(too_long, "too long for a QR code: 3000 bytes");

    // The Invite dialog: the invite link's QR code, as drawn on the canvas, is that link.
    let link = make_invite(&mut ada, "speaker").await;
    click(
        &mut ada,
        "the invite link's QR code button",
        "#invite-link ~ .qr-toggle",
    )
    .await;
    ada.wait_for(
        "the invite QR code shown",
        "(() => { const c = document.querySelector('#invite-link')?.closest('.copy-block')?.querySelector('canvas.qr'); return c && c.offsetWidth > 0 ? true : null; })()",
        Duration::from_secs(10),
    )
    .await;
    ada.eval("document.querySelector('#invite-link').closest('.copy-block').querySelector('canvas.qr').id = 'qr-under-test'; true")
        .await
        .expect("mark canvas");
    let (w, h, px) = canvas_pixels(&mut ada, "#qr-under-test").await;
    let found = decode(w, h, &px);
    println!("invite link ({} characters) → QR {w}×{h} px", link.len());
    assert_eq!(found, vec![link.clone()], "the invite QR code");

    // And the plain meeting link's, first in the dialog.
    let meeting_link = ada
        .eval("document.querySelector('.copy-block input').value")
        .await
        .expect("meeting link");
    click(
        &mut ada,
        "the meeting link's QR code button",
        ".copy-block .qr-toggle",
    )
    .await;
    ada.eval("document.querySelector('.copy-block canvas.qr').id = 'qr-meeting'; true")
        .await
        .expect("mark canvas");
    let (w, h, px) = canvas_pixels(&mut ada, "#qr-meeting").await;
    assert_eq!(
        decode(w, h, &px),
        vec![meeting_link.as_str().expect("link").to_owned()],
        "the meeting link's QR code"
    );
    ada.close().await;
}

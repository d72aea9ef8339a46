//! Embed every file of `assets/` in the binary, so the node serves its UI with no files
//! beside it.

use std::fmt::Write;
use std::path::Path;

fn main() {
    // Read at run time: a build script compiled for a checkout elsewhere (a copy of the
    // target directory) must still embed this checkout's assets.
    let manifest =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let dir = Path::new(&manifest).join("assets");
    println!("cargo:rerun-if-changed={}", dir.display());
    // A node without its UI must not build: fail loudly rather than embed nothing.
    let mut entries: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(e) => panic!("cannot read the UI assets in {}: {e}", dir.display()),
    };
    if !entries.iter().any(|p| p.ends_with("index.html")) {
        panic!("{} has no index.html", dir.display());
    }
    entries.sort();
    let mut out = String::from("/// (file name, content type, bytes) of every UI asset.\npub static ASSETS: &[(&str, &str, &[u8])] = &[\n");
    for path in entries {
        if !path.is_file() {
            continue;
        }
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let mime = match path.extension().and_then(|e| e.to_str()) {
            Some("html") => "text/html; charset=utf-8",
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            Some("png") => "image/png",
            Some("ico") => "image/x-icon",
            _ => "application/octet-stream",
        };
        let _ = writeln!(
            out,
            "    ({name:?}, {mime:?}, include_bytes!({:?})),",
            path.display().to_string()
        );
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap_or_default()).join("assets.rs");
    if let Err(e) = std::fs::write(&dest, out) {
        panic!("cannot write {}: {e}", dest.display());
    }
}

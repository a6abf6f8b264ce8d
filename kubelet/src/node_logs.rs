//! `/logs/`: the node's `/var/log`, as upstream's kubelet serves it (a Go `http.FileServer`):
//! a directory answers with a `<pre>` list of links, a file with its bytes, a directory asked
//! for without its trailing slash with a redirect to it. `kubectl get --raw
//! /api/v1/nodes/<node>/proxy/logs/` reaches it through the apiserver's node proxy.
//!
//! Invariant: nothing outside the log directory is served. `.` and `..` segments are refused and
//! the resolved path (after symbolic links) must still lie under the directory.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::AsyncReadExt;

use crate::server::{Body, BoxError, full};

/// The directory upstream's kubelet serves under `/logs/`.
pub const LOG_DIR: &str = "/var/log";

/// The file under `dir` that `rest` (the path after `/logs/`, still percent-encoded) names,
/// or `None` when it would step outside `dir`.
pub fn resolve(dir: &Path, rest: &str) -> Option<PathBuf> {
    let mut path = dir.to_path_buf();
    for seg in rest.split('/').filter(|s| !s.is_empty()) {
        let seg = percent_decode(seg)?;
        if seg == "." || seg == ".." || seg.contains('/') || seg.contains('\0') {
            return None;
        }
        path.push(seg);
    }
    Some(path)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&#34;")
}

/// The listing Go's file server writes: one link per entry, directories with a slash.
pub fn listing(entries: &[(String, bool)]) -> String {
    let mut out = String::from("<pre>\n");
    for (name, dir) in entries {
        let shown = if *dir { format!("{name}/") } else { name.clone() };
        out.push_str(&format!("<a href=\"{}\">{}</a>\n", escape(&shown), escape(&shown)));
    }
    out.push_str("</pre>\n");
    out
}

/// Answers `GET /logs/<rest>`; `request_path` is the whole path, for redirects.
pub async fn serve(dir: &Path, request_path: &str, rest: &str) -> Response<Body> {
    let not_found = || full(StatusCode::NOT_FOUND, "404 page not found\n");
    let Some(path) = resolve(dir, rest) else { return not_found() };
    let (Ok(real), Ok(base)) = (tokio::fs::canonicalize(&path).await, tokio::fs::canonicalize(dir).await) else {
        return not_found();
    };
    if !real.starts_with(&base) {
        return not_found();
    }
    let Ok(meta) = tokio::fs::metadata(&real).await else { return not_found() };
    if meta.is_dir() {
        if !request_path.ends_with('/') {
            let mut r = full(StatusCode::MOVED_PERMANENTLY, "");
            if let Ok(v) = http::HeaderValue::from_str(&format!("{request_path}/")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return r;
        }
        let mut entries = Vec::new();
        if let Ok(mut rd) = tokio::fs::read_dir(&real).await {
            while let Ok(Some(e)) = rd.next_entry().await {
                let is_dir = e.file_type().await.is_ok_and(|t| t.is_dir());
                entries.push((e.file_name().to_string_lossy().into_owned(), is_dir));
            }
        }
        entries.sort();
        let mut r = full(StatusCode::OK, listing(&entries));
        r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/html; charset=utf-8"));
        return r;
    }
    let Ok(file) = tokio::fs::File::open(&real).await else {
        return full(StatusCode::FORBIDDEN, "403 Forbidden\n");
    };
    let chunks = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, BoxError>(Frame::data(Bytes::from(buf))), Some(file)))
            }
            Err(e) => Some((Err(Box::new(e) as BoxError), None)),
        }
    });
    let mut r = Response::new(StreamBody::new(chunks).boxed_unsync());
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Ok(v) = http::HeaderValue::from_str(&meta.len().to_string()) {
        r.headers_mut().insert(header::CONTENT_LENGTH, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_log_directory() {
        let dir = Path::new("/var/log");
        assert_eq!(resolve(dir, ""), Some(PathBuf::from("/var/log")));
        assert_eq!(resolve(dir, "apt/history.log"), Some(PathBuf::from("/var/log/apt/history.log")));
        assert_eq!(resolve(dir, "a%20b"), Some(PathBuf::from("/var/log/a b")));
        for bad in ["..", "apt/../../etc/passwd", "%2e%2e/etc", "a%2Fb", "./x", "%zz"] {
            assert_eq!(resolve(dir, bad), None, "{bad}");
        }
    }

    #[test]
    fn listings_link_every_entry_and_mark_directories() {
        let text = listing(&[("apt".into(), true), ("a<b".into(), false)]);
        assert_eq!(text, "<pre>\n<a href=\"apt/\">apt/</a>\n<a href=\"a&lt;b\">a&lt;b</a>\n</pre>\n");
    }

    #[tokio::test]
    async fn files_directories_and_escapes_answer_as_upstream() {
        let tmp = std::env::temp_dir().join(format!("node-logs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("sub")).expect("mkdir");
        std::fs::write(tmp.join("sub/app.log"), "line\n").expect("write");
        let body = |r: Response<Body>| async move {
            String::from_utf8(r.into_body().collect().await.map(|c| c.to_bytes().to_vec()).unwrap_or_default())
                .expect("utf-8")
        };
        let r = serve(&tmp, "/logs/", "").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(body(r).await.contains("<a href=\"sub/\">sub/</a>"));
        let r = serve(&tmp, "/logs/sub", "sub").await;
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(r.headers()[header::LOCATION], "/logs/sub/");
        assert_eq!(body(serve(&tmp, "/logs/sub/app.log", "sub/app.log").await).await, "line\n");
        assert_eq!(serve(&tmp, "/logs/missing", "missing").await.status(), StatusCode::NOT_FOUND);
        std::os::unix::fs::symlink("/etc", tmp.join("etc")).expect("symlink");
        assert_eq!(serve(&tmp, "/logs/etc/hostname", "etc/hostname").await.status(), StatusCode::NOT_FOUND);
        let _ = std::fs::remove_dir_all(&tmp);
    }
}

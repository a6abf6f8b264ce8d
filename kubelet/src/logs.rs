//! Container log files: the runtime writes them (Docker's JSON lines, or CRI's
//! `<time> <stream> <P|F> <text>`), the kubelet reads both.

/// One decoded log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// RFC 3339 with nanoseconds, as written.
    pub time: String,
    pub stream: String,
    pub text: String,
    /// CRI partial line (`P`): the text continues in the next entry.
    pub partial: bool,
}

/// Decodes a line in either format; `None` for a line that is neither.
pub fn parse_line(line: &str) -> Option<LogLine> {
    if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let text = v.get("log")?.as_str()?.to_string();
        let partial = !text.ends_with('\n');
        return Some(LogLine {
            time: v.get("time").and_then(|t| t.as_str()).unwrap_or("").to_string(),
            stream: v.get("stream").and_then(|t| t.as_str()).unwrap_or("stdout").to_string(),
            text: text.trim_end_matches('\n').to_string(),
            partial,
        });
    }
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?.to_string();
    let stream = parts.next()?.to_string();
    let tag = parts.next()?;
    let text = parts.next().unwrap_or("").to_string();
    Some(LogLine { time, stream, text, partial: tag == "P" })
}

/// The last `lines` lines of a container's log as plain text, at most `max_bytes` (for
/// `FallbackToLogsOnError` termination messages).
pub fn tail_text(path: &str, lines: usize, max_bytes: usize) -> String {
    if path.is_empty() {
        return String::new();
    }
    let Ok(raw) = std::fs::read_to_string(path) else { return String::new() };
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for l in raw.lines().filter_map(parse_line) {
        current.push_str(&l.text);
        if !l.partial {
            out.push(std::mem::take(&mut current));
        }
    }
    let start = out.len().saturating_sub(lines);
    let mut text = out[start..].join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    if text.len() > max_bytes {
        let mut cut = text.len() - max_bytes;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text = text[cut..].to_string();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_decode() {
        let d = parse_line(r#"{"log":"hello\n","stream":"stderr","time":"2026-01-01T00:00:00.123456789Z"}"#)
            .expect("docker");
        assert_eq!((d.text.as_str(), d.stream.as_str(), d.partial), ("hello", "stderr", false));
        let c = parse_line("2026-01-01T00:00:00.1Z stdout P part").expect("cri");
        assert_eq!((c.text.as_str(), c.partial), ("part", true));
        assert!(parse_line("{not json").is_none());
    }

    #[test]
    fn tail_keeps_the_end() {
        let path = std::env::temp_dir().join(format!("kubelet-log-{}", std::process::id()));
        let lines: String =
            (0..100).map(|i| format!("{{\"log\":\"line {i}\\n\",\"stream\":\"stdout\",\"time\":\"t\"}}\n")).collect();
        std::fs::write(&path, lines).expect("write");
        let p = path.to_string_lossy();
        assert_eq!(tail_text(&p, 2, 2048), "line 98\nline 99\n");
        assert_eq!(tail_text(&p, 80, 8), "line 99\n");
        let _ = std::fs::remove_file(&path);
    }
}

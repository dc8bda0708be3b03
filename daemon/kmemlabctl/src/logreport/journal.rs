//! `journalctl -o json` lines in a log: each is an object whose `MESSAGE` is the kmemlabd
//! line, as a string, or (journald's form for a message that is not UTF-8) as an array
//! of bytes.

use serde_json::Value;

/// What one line of the log holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// Not a journal entry: the line is the kmemlabd line itself.
    Plain,
    /// A journal entry: its `MESSAGE`.
    Message(String),
    /// A journal entry whose `MESSAGE` is neither a string nor the bytes of UTF-8 text.
    Bad,
}

/// Whether `line` is a journal entry (a JSON object with `MESSAGE` and no `event`), and
/// its message.
pub(super) fn classify(line: &str) -> Line {
    if !line.starts_with('{') || !line.contains("\"MESSAGE\"") {
        return Line::Plain;
    }
    let Ok(Value::Object(entry)) = serde_json::from_str::<Value>(line) else {
        return Line::Plain;
    };
    if entry.contains_key("event") {
        return Line::Plain;
    }
    match entry.get("MESSAGE") {
        Some(Value::String(s)) => Line::Message(s.clone()),
        Some(Value::Array(bytes)) => bytes
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect::<Option<Vec<u8>>>()
            .and_then(|b| String::from_utf8(b).ok())
            .map_or(Line::Bad, Line::Message),
        Some(_) => Line::Bad,
        None => Line::Plain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_message_as_text_or_utf8_bytes() {
        let kmemlabd = r#"{"event":"bounce","ts_ns":1}"#;
        assert_eq!(classify(kmemlabd), Line::Plain);
        assert_eq!(classify("not json"), Line::Plain);
        let entry = serde_json::json!({
            "MESSAGE": kmemlabd, "PRIORITY": "6", "SYSLOG_IDENTIFIER": "kmemlabd",
        });
        assert_eq!(
            classify(&entry.to_string()),
            Line::Message(kmemlabd.to_owned())
        );
        let bytes = serde_json::json!({ "MESSAGE": kmemlabd.as_bytes() });
        assert_eq!(
            classify(&bytes.to_string()),
            Line::Message(kmemlabd.to_owned())
        );
        // Not UTF-8 (0xff), not bytes, not a message.
        assert_eq!(classify(r#"{"MESSAGE":[123,255]}"#), Line::Bad);
        assert_eq!(classify(r#"{"MESSAGE":[123,300]}"#), Line::Bad);
        assert_eq!(classify(r#"{"MESSAGE":null}"#), Line::Bad);
    }
}

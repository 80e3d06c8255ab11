//! `/connect` data: the form-encoded query string (with its `json` payload) and the optional
//! connect frame. Input: `<query>\n<frame>` (no newline: query only).
#![no_main]

use chat_gateway::gateway::handshake::ConnectRequest;
use chat_gateway::http::query_map;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (query, frame) = match text.split_once('\n') {
        Some((q, f)) => (q, Some(f)),
        None => (&*text, None),
    };
    let req = ConnectRequest::from_query(&query_map(Some(query)));
    let awaits = req.awaits_frame();
    if let Some(frame) = frame {
        if let Ok(done) = req.with_frame(frame) {
            assert!(!done.awaits_frame(), "a parsed frame completes the request");
            assert!(done.token.as_deref().is_none_or(|t| !t.is_empty()));
        }
    } else {
        assert_eq!(awaits, !query_map(Some(query)).contains_key("json"));
    }
});

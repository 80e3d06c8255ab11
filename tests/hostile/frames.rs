//! `/connect`: bad connect data, and bad frames before and after the handshake. Permanent
//! refusals are an error frame then close 1000; frames the server cannot take close the
//! socket with the RFC 6455 code (1003 binary, 1007 invalid UTF-8, 1009 too big, 1002
//! protocol error).

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::common::{encode, Api, TestServer};
use crate::nested_arrays;
use crate::ws::{self, expect_refusal, next, Next, Socket};

const WAIT: Duration = Duration::from_secs(5);

fn url_with_json(api: &Api, json: &str, token: &str) -> String {
    let ws_base = api.public_url.replacen("http", "ws", 1);
    format!(
        "{ws_base}/connect?json={}&api_key={}&authorization={}&stream-auth-type=jwt",
        encode(json),
        encode(&api.api_key),
        encode(token)
    )
}

/// The URL of a connect whose data comes in the first frame.
fn url_without_json(api: &Api) -> String {
    let ws_base = api.public_url.replacen("http", "ws", 1);
    format!("{ws_base}/connect?api_key={}", encode(&api.api_key))
}

fn raw_frame(opcode: OpCode, payload: Vec<u8>, fin: bool) -> Message {
    Message::Frame(Frame::message(payload, opcode, fin))
}

const TEXT: OpCode = OpCode::Data(Data::Text);
const CONTINUE: OpCode = OpCode::Data(Data::Continue);

#[track_caller]
fn assert_closed(what: &str, got: Next, code: u16) {
    match got {
        Next::Closed(c, _) if c == code => {}
        other => panic!("{what}: expected close {code}, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_connect_data_gets_an_error_frame_and_close_1000() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start().await;
    let token = server.user_token("frames-user");
    let deep_details = format!(
        r#"{{"user_id":"frames-user","user_details":{{"id":"frames-user","x":{}}}}}"#,
        nested_arrays(120)
    );
    let cases = [
        ("truncated json", "{\"user_id\":".to_owned()),
        ("json array", "[]".to_owned()),
        ("json number", "5".to_owned()),
        ("200 nested arrays", nested_arrays(200)),
        (
            "user_details of the wrong type",
            r#"{"user_id":"frames-user","user_details":[1]}"#.to_owned(),
        ),
        (
            "no user_id anywhere",
            r#"{"user_id":5,"user_details":{"name":"x"}}"#.to_owned(),
        ),
        ("details nested past the store's limit", deep_details),
    ];
    for (what, json) in cases {
        let error = expect_refusal(&url_with_json(&server, &json, &token), 4).await;
        assert!(error["message"].is_string(), "{what}: {error}");
    }
    // Over the header limit, the upgrade itself is refused: 431 with code 24.
    let huge = nested_arrays(10_000);
    match tokio_tungstenite::connect_async(url_with_json(&server, &huge, &token)).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 431);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                .expect("an envelope");
            assert_eq!(body["code"], 24);
        }
        other => panic!("expected a 431 refusal of the upgrade, got {other:?}"),
    }
    crate::assert_serving(&server).await;
}

async fn connected(api: &Api) -> Socket {
    ws::connect_user(api, &ws::uid("frames"), json!({})).await.0
}

#[tokio::test]
async fn bad_frames_on_a_live_connection_close_it_with_their_codes() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start().await;
    let max_frame = server.config.limits.max_frame_bytes;
    let max_message = server.config.limits.max_message_bytes;

    let mut s = connected(&server).await;
    s.send(raw_frame(
        TEXT,
        b"{\"type\":\"health.check\xff\"}".to_vec(),
        true,
    ))
    .await
    .expect("send");
    assert_closed("invalid UTF-8", next(&mut s, WAIT).await, 1007);

    let mut s = connected(&server).await;
    s.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .expect("send");
    assert_closed("binary", next(&mut s, WAIT).await, 1003);

    let mut s = connected(&server).await;
    s.send(Message::Text("x".repeat(max_frame + 1).into()))
        .await
        .expect("send");
    assert_closed("frame over the limit", next(&mut s, WAIT).await, 1009);

    let mut s = connected(&server).await;
    let part = max_frame / 2;
    let mut sent = 0;
    let mut first = true;
    while sent <= max_message {
        let op = if first { TEXT } else { CONTINUE };
        first = false;
        if s.send(raw_frame(op, vec![b' '; part], false))
            .await
            .is_err()
        {
            break;
        }
        sent += part;
    }
    assert_closed("message over the limit", next(&mut s, WAIT).await, 1009);

    let mut s = connected(&server).await;
    s.send(raw_frame(CONTINUE, b"{}".to_vec(), true))
        .await
        .expect("send");
    assert_closed(
        "continuation without a start",
        next(&mut s, WAIT).await,
        1002,
    );

    // Fragmentation itself is fine: a health check in three fragments gets its answer.
    let mut s = connected(&server).await;
    let check = br#"[{"type":"health.check","client_id":"frames"}]"#;
    s.send(raw_frame(TEXT, check[..10].to_vec(), false))
        .await
        .expect("send");
    s.send(raw_frame(CONTINUE, check[10..20].to_vec(), false))
        .await
        .expect("send");
    s.send(raw_frame(CONTINUE, check[20..].to_vec(), true))
        .await
        .expect("send");
    match next(&mut s, WAIT).await {
        Next::Frame(f) => assert_eq!(f["type"], "health.check", "{f}"),
        other => panic!("fragmented health check: {other:?}"),
    }
    // Text that is valid UTF-8 but not JSON is ignored, and the connection stays.
    ws::send(&mut s, json!("not a health check")).await;
    s.send(Message::Text("\u{0}\u{fffd}".into()))
        .await
        .expect("send");
    let check_text = std::str::from_utf8(check).expect("utf-8");
    s.send(Message::Text(check_text.into()))
        .await
        .expect("send");
    match next(&mut s, WAIT).await {
        Next::Frame(f) => assert_eq!(f["type"], "health.check", "{f}"),
        other => panic!("after junk text: {other:?}"),
    }
    crate::assert_serving(&server).await;
}

#[tokio::test]
async fn bad_first_frames_close_the_handshake_with_their_codes() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start().await;
    let max_frame = server.config.limits.max_frame_bytes;
    let url = url_without_json(&server);

    let mut s = ws::open(&url).await;
    s.send(Message::Binary(vec![0; 8].into()))
        .await
        .expect("send");
    assert_closed("binary first frame", next(&mut s, WAIT).await, 1003);

    let mut s = ws::open(&url).await;
    s.send(raw_frame(TEXT, vec![b'{', 0xc3, 0x28, b'}'], true))
        .await
        .expect("send");
    assert_closed("invalid UTF-8 first frame", next(&mut s, WAIT).await, 1007);

    let mut s = ws::open(&url).await;
    s.send(Message::Text("x".repeat(max_frame + 1).into()))
        .await
        .expect("send");
    assert_closed("oversized first frame", next(&mut s, WAIT).await, 1009);

    // A first frame that is text but not a connect object: an error frame, then 1000.
    for junk in ["{", "[]", "\"x\"", &nested_arrays(5000)] {
        let mut s = ws::open(&url).await;
        s.send(Message::Text(junk.into())).await.expect("send");
        match next(&mut s, WAIT).await {
            Next::Frame(f) => {
                assert_eq!(f["type"], "connection.error", "{f}");
                assert_eq!(f["error"]["code"], 4, "{f}");
            }
            other => panic!("junk first frame {:.20}: {other:?}", junk),
        }
        assert_closed("after the error frame", next(&mut s, WAIT).await, 1000);
    }
    // The same socket kind still connects when the frame is right.
    let id = ws::uid("frames");
    let token = server.user_token(&id);
    let mut s = ws::open(&url).await;
    let frame = json!({"user_id": id, "user_details": {"id": id}, "authorization": token, "stream-auth-type": "jwt"});
    ws::send(&mut s, frame).await;
    match next(&mut s, WAIT).await {
        Next::Frame(f) => assert_eq!(f["type"], "health.check", "{f}"),
        other => panic!("connect frame: {other:?}"),
    }
}

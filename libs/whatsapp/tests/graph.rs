//! The Graph API client against real HTTP servers on 127.0.0.1 playing Meta: its success and
//! error shapes, a proxy's error page, a refused port, a silent server, broken answers.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wamesh_whatsapp::{ErrorClass, GraphClient, SendError};

const TOKEN: &str = "EAAtest-secret-token";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Generous: the machine is slow and shared; nothing here waits on it unless told to.
const TIMEOUT: Duration = Duration::from_secs(20);

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Meta {
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl Meta {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Serves `router` on 127.0.0.1:0, counting connections; answers the base URL.
async fn serve(router: Router<Meta>, meta: Meta) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = meta.connections.clone();
    let listener = listener.tap_io(move |_| {
        connections.fetch_add(1, Ordering::SeqCst);
    });
    let app = router.with_state(meta);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Records the request, then answers as Meta does for the phone number id: `err<code>` is
/// that Meta error code, any other id is accepted.
async fn meta_send(
    State(meta): State<Meta>,
    Path((version, phone)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    meta.seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Seen {
            path: format!("/{version}/{phone}/messages"),
            headers,
            body,
        });
    let Some(Ok(code)) = phone.strip_prefix("err").map(str::parse::<i64>) else {
        return axum::Json(json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": "+1 555 010 2030", "wa_id": "15550102030"}],
            "messages": [{"id": "wamid.HBgLMTU1NTAxMDIwMzAVAgARGBI", "message_status": "accepted"}],
        }))
        .into_response();
    };
    let status = if code == 190 {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::BAD_REQUEST
    };
    let error = json!({"error": {
        "message": format!("(#{code}) Something about {code}"),
        "type": "OAuthException",
        "code": code,
        "error_subcode": 2494010,
        "error_data": {"messaging_product": "whatsapp", "details": format!("details of {code}")},
        "fbtrace_id": "AbCdEf123",
    }});
    (status, axum::Json(error)).into_response()
}

async fn meta() -> (String, Meta) {
    let meta = Meta::default();
    let router = Router::new().route("/{version}/{phone}/messages", post(meta_send));
    (serve(router, meta.clone()).await, meta)
}

fn client(base: &str, timeout: Duration) -> GraphClient {
    GraphClient::new(base, "v23.0", timeout).unwrap()
}

async fn send(client: &GraphClient, phone: &str) -> Result<wamesh_whatsapp::Accepted, SendError> {
    client
        .send_message(phone, TOKEN, br#"{"to":"1"}"#.to_vec(), HeaderMap::new())
        .await
}

/// Every error's message, whatever the error, leaves the token out.
#[track_caller]
fn no_token(err: &SendError) {
    assert!(!format!("{err} {err:?}").contains(TOKEN), "{err:?}");
}

#[tokio::test]
async fn an_accepted_message_answers_the_wamid_and_the_request_arrives_as_given() {
    let (base, meta) = meta().await;
    let client = client(&format!("{base}/"), TIMEOUT);
    let body = br#"{"messaging_product":"whatsapp","to":"15550102030","type":"text","text":{"body":"caf\u00e9"}}"#;
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", HeaderValue::from_static(TRACEPARENT));
    let accepted = client
        .send_message("106540352242922", TOKEN, body.to_vec(), headers)
        .await
        .unwrap();
    assert_eq!(accepted.wamid, "wamid.HBgLMTU1NTAxMDIwMzAVAgARGBI");
    assert_eq!(accepted.wa_id.as_deref(), Some("15550102030"));
    assert_eq!(accepted.message_status.as_deref(), Some("accepted"));

    let seen = meta.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.path, "/v23.0/106540352242922/messages");
    assert_eq!(
        request.body.as_ref(),
        body.as_slice(),
        "the body bytes as given"
    );
    assert_eq!(
        request.headers[header::AUTHORIZATION],
        format!("Bearer {TOKEN}").as_str()
    );
    assert_eq!(request.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(request.headers["traceparent"], TRACEPARENT);
}

#[tokio::test]
async fn meta_errors_come_back_whole_with_their_class() {
    let (base, _meta) = meta().await;
    let client = client(&base, TIMEOUT);
    for (code, http_status, class) in [
        (130429, 400, ErrorClass::Transient),
        (131056, 400, ErrorClass::Transient),
        (131026, 400, ErrorClass::Permanent),
        (100, 400, ErrorClass::Permanent),
        (190, 401, ErrorClass::Permanent),
    ] {
        let err = send(&client, &format!("err{code}")).await.unwrap_err();
        no_token(&err);
        assert_eq!(err.class(), class, "{code}");
        assert_eq!(err.code(), Some(code));
        let SendError::Api {
            http_status: status,
            error,
        } = err
        else {
            panic!("{code}: {err:?} is not Meta's error");
        };
        assert_eq!(status, http_status);
        assert_eq!(error.code, code);
        assert_eq!(error.subcode, Some(2494010));
        assert_eq!(error.error_type, "OAuthException");
        assert_eq!(error.message, format!("(#{code}) Something about {code}"));
        assert_eq!(error.details, format!("details of {code}"));
        assert_eq!(error.fbtrace_id, "AbCdEf123");
    }
}

#[tokio::test]
async fn http_errors_without_meta_shape_are_classed_by_status() {
    async fn page(Path(status): Path<u16>) -> Response {
        let status = StatusCode::from_u16(status).unwrap();
        let html = "<html><body><h1>Bad Gateway</h1></body></html>";
        (status, [(header::CONTENT_TYPE, "text/html")], html).into_response()
    }
    let meta = Meta::default();
    let router = Router::new().route("/v23.0/{status}/messages", post(page));
    let client = client(&serve(router, meta).await, TIMEOUT);
    for (status, class) in [
        (502, ErrorClass::Transient),
        (503, ErrorClass::Transient),
        (429, ErrorClass::Transient),
        (403, ErrorClass::Permanent),
        (404, ErrorClass::Permanent),
    ] {
        let err = send(&client, &status.to_string()).await.unwrap_err();
        assert_eq!(err, SendError::Http { status });
        assert_eq!(err.class(), class, "{status}");
        assert_eq!(err.code(), None);
    }
}

#[tokio::test]
async fn a_refused_port_is_not_sent_and_safe_to_retry() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = send(&client(&format!("http://{addr}"), TIMEOUT), "1")
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::NotSent(_)), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
    no_token(&err);
}

#[tokio::test]
async fn a_connect_that_times_out_is_not_sent() {
    // A listener that never accepts, its backlog filled: the kernel drops further SYNs, so the
    // client's connect hangs until its connect timeout (half the call's).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
    }
    let err = send(
        &client(&format!("http://{addr}"), Duration::from_secs(2)),
        "1",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SendError::NotSent(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("deadline has elapsed") || text.contains("timed out"),
        "a connect timeout, not a refusal: {text}"
    );
    assert_eq!(err.class(), ErrorClass::Transient);
    drop(listener);
}

#[tokio::test]
async fn a_server_that_takes_the_request_and_stays_silent_leaves_it_in_doubt() {
    async fn silent(State(meta): State<Meta>, body: Bytes) -> StatusCode {
        meta.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Seen {
                path: String::new(),
                headers: HeaderMap::new(),
                body,
            });
        tokio::time::sleep(Duration::from_secs(600)).await;
        StatusCode::OK
    }
    let meta = Meta::default();
    let router = Router::new().route("/v23.0/{phone}/messages", post(silent));
    let base = serve(router, meta.clone()).await;
    let err = send(&client(&base, Duration::from_secs(2)), "1")
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::NoAnswer(_)), "{err:?}");
    assert_eq!(err.class(), ErrorClass::InDoubt);
    assert_eq!(meta.seen().len(), 1, "the server had the whole request");
    no_token(&err);
}

/// A raw HTTP/1.1 server: reads one request (headers and the body its Content-Length gives),
/// writes `answer` as it is, and closes.
async fn raw_server(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            read_request(&mut stream).await;
            let _ = stream.write_all(answer).await;
            let _ = stream.shutdown().await;
        }
    });
    addr
}

async fn read_request(stream: &mut tokio::net::TcpStream) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Ok(n) = stream.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        request.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                return;
            }
        }
    }
}

#[tokio::test]
async fn broken_answers_to_a_sent_request_leave_it_in_doubt() {
    let cases: [(&str, &'static [u8]); 4] = [
        (
            "a 200 that is not JSON",
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 8\r\n\r\nnot json",
        ),
        (
            "a 200 without a message id",
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 32\r\n\r\n{\"messaging_product\":\"whatsapp\"}",
        ),
        (
            "a 200 cut short",
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{\"messaging_product\":\"whatsapp\",\"messages\":[{\"id\":\"wamid.X",
        ),
        ("a connection closed without an answer", b""),
    ];
    for (what, answer) in cases {
        let addr = raw_server(answer).await;
        let err = send(&client(&format!("http://{addr}"), TIMEOUT), "1")
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::NoAnswer(_)), "{what}: {err:?}");
        assert_eq!(err.class(), ErrorClass::InDoubt, "{what}");
        no_token(&err);
    }
}

#[tokio::test]
async fn sends_reuse_one_keep_alive_connection() {
    let (base, meta) = meta().await;
    let client = client(&base, TIMEOUT);
    for _ in 0..5 {
        send(&client, "ok").await.unwrap();
    }
    send(&client.clone(), "ok").await.unwrap();
    assert_eq!(meta.seen().len(), 6);
    assert_eq!(meta.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn requests_that_cannot_be_made_are_refused_before_sending() {
    let (base, meta) = meta().await;
    let client = client(&base, TIMEOUT);
    for (phone, token) in [
        ("", TOKEN),
        ("12/../34", TOKEN),
        ("123", ""),
        ("123", "tok\r\nX-Injected: 1"),
    ] {
        let err = client
            .send_message(phone, token, b"{}".to_vec(), HeaderMap::new())
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::Invalid(_)), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Permanent);
        assert!(!err.to_string().contains("X-Injected"), "{err}");
    }
    assert!(meta.seen().is_empty());
}

#[test]
fn bad_settings_are_refused_by_name() {
    for (base, version, timeout, needle) in [
        ("graph.facebook.com", "v23.0", TIMEOUT, "base URL"),
        ("ftp://graph.facebook.com", "v23.0", TIMEOUT, "base URL"),
        ("https://graph.facebook.com/x", "v23.0", TIMEOUT, "base URL"),
        ("https://graph.facebook.com", "23.0", TIMEOUT, "version"),
        ("https://graph.facebook.com", "v23", TIMEOUT, "version"),
        (
            "https://graph.facebook.com",
            "v23.0",
            Duration::ZERO,
            "timeout",
        ),
    ] {
        let err = GraphClient::new(base, version, timeout).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    assert!(GraphClient::new("https://graph.facebook.com/", "v23.0", TIMEOUT).is_ok());
}

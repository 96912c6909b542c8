use super::*;
use std::sync::Mutex;

/// Records what `sync_now` was asked; fails for the user "fail@example.com".
#[derive(Default)]
struct Fake {
    asked: Mutex<Vec<Option<String>>>,
}

impl AdminHandler for Fake {
    fn metrics(&self) -> String {
        "cove_sync_queue_length 3\n".to_string()
    }
    fn sync_status(&self) -> String {
        r#"{"peers":[]}"#.to_string()
    }
    fn sync_now(
        &self,
        user: Option<String>,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async move {
            self.asked.lock().unwrap().push(user.clone());
            match user.as_deref() {
                Some("fail@example.com") => Err("peer storage-02 unreachable".to_string()),
                Some(u) => Ok(format!("synced {u}\n")),
                None => Ok("synced all\n".to_string()),
            }
        })
    }
    fn admin_token(&self) -> Option<String> {
        Some(TOKEN.to_string())
    }
}

const TOKEN: &str = "an admin token";

/// A POST with the admin token.
async fn post(addr: &str, path: &str) -> io::Result<(u16, String)> {
    http_exchange(
        addr,
        "POST",
        path,
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    )
    .await
    .map(|(status, _, body)| (status, body))
}

struct Server {
    addr: String,
    fake: Arc<Fake>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start() -> Server {
    start_with(READ_TIMEOUT).await
}

async fn start_with(read_timeout: Duration) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let fake = Arc::new(Fake::default());
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(serve(listener, fake.clone(), stopped, read_timeout));
    Server {
        addr,
        fake,
        stop,
        task,
    }
}

/// Send raw bytes, read the whole raw response.
async fn raw(addr: &str, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn routes_answer_with_their_content_types() {
    let s = start().await;
    let r = raw(&s.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        r,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: 25\r\nConnection: close\r\n\r\ncove_sync_queue_length 3\n"
    );
    let r = raw(&s.addr, b"GET /sync/status HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"));
    assert!(r.ends_with("\r\n\r\n{\"peers\":[]}"), "{r}");

    assert_eq!(
        http_request(&s.addr, "GET", "/metrics").await.unwrap(),
        (200, "cove_sync_queue_length 3\n".to_string())
    );
    assert_eq!(
        post(&s.addr, "/sync/now").await.unwrap(),
        (200, "synced all\n".to_string())
    );
    let path = sync_now_path(Some("ann+lists@example.com"));
    assert_eq!(path, "/sync/now?user=ann%2Blists@example.com");
    assert_eq!(
        post(&s.addr, &path).await.unwrap(),
        (200, "synced ann+lists@example.com\n".to_string())
    );
    // A literal '+' is not a space here.
    let (code, _) = post(&s.addr, "/sync/now?user=b+x%40example.com")
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        post(&s.addr, "/sync/now?user=fail@example.com")
            .await
            .unwrap(),
        (500, "peer storage-02 unreachable".to_string())
    );
    assert_eq!(
        *s.fake.asked.lock().unwrap(),
        vec![
            None,
            Some("ann+lists@example.com".to_string()),
            Some("b+x@example.com".to_string()),
            Some("fail@example.com".to_string()),
        ]
    );
}

#[tokio::test]
async fn unknown_paths_wrong_methods_and_bad_queries() {
    let s = start().await;
    assert_eq!(http_request(&s.addr, "GET", "/").await.unwrap().0, 404);
    assert_eq!(http_request(&s.addr, "GET", "/sync").await.unwrap().0, 404);
    let r = raw(
        &s.addr,
        b"POST /metrics HTTP/1.1\r\nAuthorization: Bearer an admin token\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
    assert!(r.contains("\r\nAllow: GET\r\n"), "{r}");
    let r = raw(&s.addr, b"GET /sync/now?user=x HTTP/1.1\r\n\r\n").await;
    assert!(r.contains("\r\nAllow: POST\r\n"), "{r}");
    for bad in [
        "/sync/now?user=",
        "/sync/now?user=a%2",
        "/sync/now?user=a%zz",
        "/sync/now?user=%ff%fe",
        "/sync/now?user=a&user=b",
        "/sync/now?who=a",
    ] {
        assert_eq!(post(&s.addr, bad).await.unwrap().0, 400, "{bad}");
    }
    assert!(s.fake.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn malformed_and_oversized_requests_are_refused() {
    let s = start().await;
    let status = |r: String| r.split(' ').nth(1).unwrap_or_default().to_string();
    assert_eq!(status(raw(&s.addr, b"GET /metrics\r\n\r\n").await), "400");
    assert_eq!(
        status(raw(&s.addr, b"GET /metrics HTTP/2.0\r\n\r\n").await),
        "400"
    );
    assert_eq!(
        status(raw(&s.addr, b"GET http://x/metrics HTTP/1.1\r\n\r\n").await),
        "400"
    );
    assert_eq!(
        status(raw(&s.addr, b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n").await),
        "400"
    );
    assert_eq!(
        status(
            raw(
                &s.addr,
                b"POST /sync/now HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            )
            .await
        ),
        "400"
    );
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_REQUEST_LINE));
    assert_eq!(status(raw(&s.addr, long.as_bytes()).await), "414");
    let endless_line = "a".repeat(MAX_REQUEST_LINE + 10);
    assert_eq!(status(raw(&s.addr, endless_line.as_bytes()).await), "414");
    let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
    let r = raw(
        &s.addr,
        format!("GET /metrics HTTP/1.1\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(r), "431");
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "y".repeat(MAX_HEAD)
    );
    assert_eq!(status(raw(&s.addr, huge.as_bytes()).await), "431");
    let r = raw(
        &s.addr,
        format!(
            "POST /sync/now HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status(r), "413");
    // A small body is read and ignored.
    let r = raw(
        &s.addr,
        b"POST /sync/now HTTP/1.1\r\nAuthorization: Bearer an admin token\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("synced all\n"),
        "{r}"
    );
    // Bare LF line ends are accepted.
    let r = raw(&s.addr, b"GET /metrics HTTP/1.0\n\n").await;
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
}

#[tokio::test]
async fn a_client_that_stops_mid_request_gets_408() {
    let s = start_with(Duration::from_millis(200)).await;
    let mut tcp = TcpStream::connect(&s.addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{out}");
}

#[tokio::test]
async fn stops_when_told() {
    let s = start().await;
    assert_eq!(
        http_request(&s.addr, "GET", "/metrics").await.unwrap().0,
        200
    );
    s.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .expect("serve_http returns after stop")
        .unwrap();
    assert!(
        TcpStream::connect(&s.addr).await.is_err(),
        "listener closed"
    );
}

#[test]
fn parse_head_reads_content_length_and_keeps_the_fields() {
    let h = parse_head(b"POST /sync/now?user=a HTTP/1.1\r\nHost: x\r\ncontent-length: 3\r\n\r\n")
        .unwrap();
    assert_eq!(
        h,
        Head {
            method: "POST".into(),
            target: "/sync/now?user=a".into(),
            content_length: 3,
            headers: vec![
                ("Host".into(), "x".into()),
                ("content-length".into(), "3".into())
            ],
        }
    );
    assert_eq!(route("GET", "/metrics?x=1"), Ok(Route::Metrics));
    assert_eq!(
        route("POST", "/sync/now?user=a%40b"),
        Ok(Route::SyncNow(Some("a@b".into())))
    );
    assert_eq!(route("POST", "/sync/now?"), Ok(Route::SyncNow(None)));
    assert_eq!(
        parse_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabcdef").unwrap(),
        (
            404,
            vec![("Content-Length".to_string(), "3".to_string())],
            "abc".to_string()
        )
    );
    assert!(parse_response(b"garbage").is_err());
}

#[tokio::test]
async fn state_changes_need_the_admin_token_and_no_web_page() {
    let s = start().await;
    let (code, _) = http_request(&s.addr, "POST", "/sync/now").await.unwrap();
    assert_eq!(code, 401, "no token");
    let wrong = [("Authorization", "Bearer not the token")];
    let (code, _, _) = http_exchange(&s.addr, "POST", "/sync/now", &wrong)
        .await
        .unwrap();
    assert_eq!(code, 401, "a wrong token");
    let auth = format!("Bearer {TOKEN}");
    let from_page = [
        ("Authorization", auth.as_str()),
        ("Origin", "https://evil.example"),
    ];
    let (code, _, _) = http_exchange(&s.addr, "POST", "/sync/now", &from_page)
        .await
        .unwrap();
    assert_eq!(code, 403, "a request a web page made");
    assert!(
        s.fake.asked.lock().unwrap().is_empty(),
        "nothing was synced"
    );
    assert_eq!(post(&s.addr, "/sync/now").await.unwrap().0, 200);
    assert_eq!(s.fake.asked.lock().unwrap().len(), 1);
    // Reading needs no token.
    assert_eq!(
        http_request(&s.addr, "GET", "/metrics").await.unwrap().0,
        200
    );
}

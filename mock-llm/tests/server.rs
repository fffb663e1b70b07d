//! The mock server over real HTTP: answers, streaming, tool-call chunks, faults, quirks, stats.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use troupe_mock_llm::{Fault, MockConfig, MockHandle, MockServer};

async fn start(config: MockConfig) -> MockHandle {
    match MockServer::start(config).await {
        Ok(handle) => handle,
        Err(err) => panic!("mock did not start: {err}"),
    }
}

fn config(text: &str) -> MockConfig {
    match MockConfig::from_toml(text, "mock.toml") {
        Ok(config) => config,
        Err(err) => panic!("{err}"),
    }
}

async fn post(
    mock: &MockHandle,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", mock.base_url()))
        .json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    match request.send().await {
        Ok(response) => response,
        Err(err) => panic!("request failed: {err}"),
    }
}

async fn json_of(response: reqwest::Response) -> Value {
    match response.json().await {
        Ok(value) => value,
        Err(err) => panic!("not JSON: {err}"),
    }
}

/// The `data:` payloads of an SSE body, in order.
async fn events(response: reqwest::Response) -> Vec<String> {
    let mut text = String::new();
    let mut body = response.bytes_stream();
    while let Some(bytes) = body.next().await {
        match bytes {
            Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Err(err) => panic!("body failed: {err}"),
        }
    }
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

fn user(text: &str) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn answers_with_usage_and_counts_requests() {
    let mock = start(MockConfig::default()).await;
    let body = json_of(post(&mock, "/chat/completions", user("hello mock world"), &[]).await).await;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "You said: hello mock world"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    assert_eq!(body["usage"]["completion_tokens"], 5);
    let stats = mock.stats();
    assert_eq!((stats.requests, stats.chat_completions), (1, 1));
    assert_eq!((stats.prompt_tokens, stats.completion_tokens), (3, 5));
}

#[tokio::test]
async fn streams_word_deltas_then_finish_usage_and_done() {
    let mock = start(MockConfig::default()).await;
    let mut request = user("one two");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let events = events(post(&mock, "/chat/completions", request, &[]).await).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|event| serde_json::from_str(event).unwrap_or(Value::Null))
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "You said: one two");
    let usage = &chunks[chunks.len() - 1]["usage"];
    assert_eq!(usage["completion_tokens"], 4);
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test]
async fn streamed_tool_calls_arrive_in_fragments_with_late_ids() {
    let mock = start(config(
        "[[rules]]\ncontains = \"add\"\ntool_calls = [{ name = \"calculator\", arguments = { expression = \"1 + 2\" } }]\n",
    ))
    .await;
    let mut request = user("please add");
    request["stream"] = json!(true);
    let events = events(
        post(
            &mock,
            "/chat/completions",
            request,
            &[("x-mock-quirks", "late_tool_ids")],
        )
        .await,
    )
    .await;
    let fragments: Vec<Value> = events
        .iter()
        .filter_map(|event| serde_json::from_str::<Value>(event).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["tool_calls"][0]
                .as_object()
                .cloned()
        })
        .map(Value::Object)
        .collect();
    assert!(fragments.len() >= 2);
    assert!(fragments[0].get("id").is_none());
    assert_eq!(fragments[1]["id"], "call_1");
    assert_eq!(fragments[1]["function"]["name"], "calculator");
    let arguments: String = fragments
        .iter()
        .filter_map(|fragment| fragment["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, r#"{"expression":"1 + 2"}"#);
}

#[tokio::test]
async fn faults_come_from_the_queue_then_the_header() {
    let mock = start(MockConfig {
        retry_after: Duration::from_millis(1500),
        ..MockConfig::default()
    })
    .await;
    mock.push_faults([Fault::RateLimited, Fault::InsufficientQuota]);
    let response = post(&mock, "/chat/completions", user("hi"), &[]).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(response.headers()["retry-after-ms"], "1500");
    let body = json_of(post(&mock, "/chat/completions", user("hi"), &[]).await).await;
    assert_eq!(body["error"]["code"], "insufficient_quota");
    let response = post(
        &mock,
        "/chat/completions",
        user("hi"),
        &[("x-mock-fault", "html_error")],
    )
    .await;
    assert_eq!(response.status(), 500);
    assert!(response.text().await.unwrap_or_default().contains("<html>"));
    let response = post(&mock, "/chat/completions", user("hi"), &[]).await;
    assert_eq!(response.status(), 200);
    let stats = mock.stats();
    assert_eq!((stats.requests, stats.faults), (4, 3));
    assert_eq!(stats.faults_by_kind.get("429"), Some(&1));
}

#[tokio::test]
async fn faults_can_be_queued_over_http_and_stats_read() {
    let mock = start(MockConfig::default()).await;
    let client = reqwest::Client::new();
    let root = mock.base_url().replace("/v1", "");
    let queued = client
        .post(format!("{root}/_mock/faults"))
        .json(&json!({"faults": ["503"]}))
        .send()
        .await;
    assert!(matches!(queued, Ok(response) if response.status() == 200));
    assert_eq!(
        post(&mock, "/chat/completions", user("hi"), &[])
            .await
            .status(),
        503
    );
    let stats: Value = match client.get(format!("{root}/_mock/stats")).send().await {
        Ok(response) => json_of(response).await,
        Err(err) => panic!("{err}"),
    };
    assert_eq!(stats["faults_by_kind"]["503"], 1);
    assert_eq!(stats["chat_completions"], 1);
}

#[tokio::test]
async fn malformed_and_truncated_streams() {
    let mock = start(MockConfig::default()).await;
    let mut request = user("a b c d e f");
    request["stream"] = json!(true);
    let malformed = events(
        post(
            &mock,
            "/chat/completions",
            request.clone(),
            &[("x-mock-fault", "malformed")],
        )
        .await,
    )
    .await;
    assert!(malformed
        .iter()
        .any(|event| *event != "[DONE]" && serde_json::from_str::<Value>(event).is_err()));
    let truncated = events(
        post(
            &mock,
            "/chat/completions",
            request,
            &[("x-mock-fault", "truncate")],
        )
        .await,
    )
    .await;
    assert!(!truncated.is_empty());
    assert!(!truncated
        .iter()
        .any(|event| event == "[DONE]" || event.contains("finish_reason\":\"stop")));
}

#[tokio::test]
async fn a_hung_request_is_released_when_the_handle_drops() {
    let mock = start(MockConfig::default()).await;
    let url = format!("{}/chat/completions", mock.base_url());
    let pending = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("x-mock-fault", "hang")
            .json(&user("hi"))
            .send()
            .await
            .map(|response| response.status().as_u16())
    });
    // Wait until the request has arrived, then stop the server.
    tokio::time::timeout(Duration::from_secs(5), async {
        while mock.stats().requests == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("request never arrived"));
    drop(mock);
    let status = tokio::time::timeout(Duration::from_secs(5), pending).await;
    assert!(matches!(status, Ok(Ok(Ok(503)))), "{status:?}");
}

#[tokio::test]
async fn embeddings_are_deterministic_with_usage() {
    let mock = start(MockConfig::default()).await;
    let request = json!({"model": "e", "input": ["the cat", "the cat", "dogs bark loudly"]});
    let body = json_of(post(&mock, "/embeddings", request, &[]).await).await;
    let data = body["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(data.len(), 3);
    assert_eq!(data[0]["embedding"], data[1]["embedding"]);
    assert_eq!(data[0]["embedding"].as_array().map(Vec::len), Some(384));
    assert_eq!(body["usage"]["prompt_tokens"], 7);
    let body = json_of(
        post(
            &mock,
            "/embeddings",
            json!({"input": "x", "dimensions": 8}),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(
        body["data"][0]["embedding"].as_array().map(Vec::len),
        Some(8)
    );
    assert_eq!(mock.stats().embeddings, 2);
}

#[tokio::test]
async fn rate_limits_send_the_configured_retry_after_values_in_turn() {
    let mock = start(config(
        "fault = \"429\"\nretry_after_values = [\"1e30\", \"NaN\", \"Fri, 31 Dec 9999 23:59:59 GMT\"]\n\
         retry_after_ms_values = [\"-5\"]\n",
    ))
    .await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let response = post(&mock, "/chat/completions", user("hi"), &[]).await;
        assert_eq!(response.status(), 429);
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(header("retry-after-ms").as_deref(), Some("-5"));
        seen.push(header("retry-after").unwrap_or_default());
    }
    assert_eq!(
        seen,
        ["1e30", "NaN", "Fri, 31 Dec 9999 23:59:59 GMT", "1e30"]
    );
}

#[tokio::test]
async fn huge_bodies_are_valid_answers_of_the_configured_size() {
    let mock = start(config("fault = \"huge_body\"\nhuge_bytes = 300000\n")).await;
    let body = json_of(post(&mock, "/chat/completions", user("hi"), &[]).await).await;
    let content = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(content.len(), 300_000);
    assert!(content.bytes().all(|b| b == b'a'));

    let mut streamed = user("hi");
    streamed["stream"] = json!(true);
    let events = events(post(&mock, "/chat/completions", streamed, &[]).await).await;
    let first: Value = serde_json::from_str(&events[0]).unwrap_or_default();
    let text = first["choices"][0]["delta"]["content"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(text.len(), 300_000);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(mock.stats().faults_by_kind.get("huge_body"), Some(&2));
}

#[tokio::test]
async fn endless_answers_go_on_until_the_client_leaves() {
    let mock = start(config("fault = \"endless\"\n")).await;
    for stream in [false, true] {
        let mut request = user("hi");
        request["stream"] = json!(stream);
        let mut body = post(&mock, "/chat/completions", request, &[])
            .await
            .bytes_stream();
        let mut read = 0;
        while read < 4 * 1024 * 1024 {
            match body.next().await {
                Some(Ok(bytes)) => read += bytes.len(),
                other => panic!("the body ended after {read} bytes: {other:?}"),
            }
        }
    }
    // Leaving released the server's side: it still answers.
    mock.set_fault(None);
    let body = json_of(post(&mock, "/chat/completions", user("hi"), &[]).await).await;
    assert_eq!(body["choices"][0]["message"]["content"], "You said: hi");
}

#[tokio::test]
async fn a_huge_header_comes_with_a_normal_answer() {
    let mock = start(config("fault = \"huge_header\"\n")).await;
    // Past reqwest's (hyper's) header limit: the client refuses it.
    let sent = reqwest::Client::new()
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(&user("hi"))
        .send()
        .await;
    assert!(sent.is_err(), "{sent:?}");
    // Read raw, the header is there, and so is the answer.
    let addr = mock.addr();
    let raw = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(addr).ok()?;
        let body = user("hi").to_string();
        write!(
            conn,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut out = Vec::new();
        conn.read_to_end(&mut out).ok()?;
        Some(String::from_utf8_lossy(&out).into_owned())
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_default();
    assert!(
        raw.len() > troupe_mock_llm::HUGE_HEADER_BYTES,
        "{}",
        raw.len()
    );
    assert!(raw.contains("You said: hi"));
}

#[tokio::test]
async fn echo_repeats_the_url_and_authorization_in_a_400() {
    let mock = start(config("fault = \"echo\"\n")).await;
    let response = reqwest::Client::new()
        .post(format!("{}/chat/completions", mock.base_url()))
        .bearer_auth("sk-echoed")
        .json(&user("hi"))
        .send()
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(response.status(), 400);
    let body = json_of(response).await;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("Bearer sk-echoed"), "{message}");
    assert!(
        message.contains(&format!("http://{}/v1/chat/completions", mock.addr())),
        "{message}"
    );
}

//! Model services over real HTTP: troupe's `openai` model (async-openai) against the mock
//! server — answers, streaming, tool calls, quirks, retries, timeouts, broken streams, error
//! bodies, embeddings — and the `scripted` model: rules, built-in behaviour and
//! cassettes replayed offline.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use troupe_runtime::retry::Transient as _;

use troupe_agents::model::{
    self, ChatRequest, ChatResponse, FinishReason, ModelError, ModelService, ToolSchema, Usage,
};
use troupe_agents::{ChatMessage, Role, ToolCall};

use crate::support::llm::{
    self, mock_config, model_settings, openai_settings, openai_settings_with, Fault, MockConfig,
    MockHandle, Quirk, PROMPTLY,
};

fn request(messages: Vec<ChatMessage>, tools: &[&str]) -> ChatRequest {
    ChatRequest {
        messages,
        tools: tools
            .iter()
            .map(|name| ToolSchema {
                name: (*name).to_owned(),
                description: format!("the {name} tool"),
                parameters: serde_json::json!({"type": "object", "properties": {}}),
            })
            .collect(),
        temperature: Some(0.2),
        max_tokens: None,
    }
}

fn user(text: &str) -> ChatRequest {
    request(vec![ChatMessage::new(Role::User, text)], &[])
}

fn build(settings: &troupe_config::ModelSettings) -> Arc<dyn ModelService> {
    model::build("m", settings).unwrap_or_else(|err| panic!("{err}"))
}

async fn openai(mock: &MockHandle) -> Arc<dyn ModelService> {
    build(&openai_settings(mock))
}

/// Runs a streamed call; returns its result and the deltas sent, in order.
async fn streamed(
    model: &dyn ModelService,
    request: &ChatRequest,
) -> (Result<ChatResponse, ModelError>, Vec<String>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let result = model.chat(request, Some(tx)).await;
    let mut deltas = Vec::new();
    while let Some(delta) = rx.recv().await {
        deltas.push(delta);
    }
    (result, deltas)
}

fn ok(result: Result<ChatResponse, ModelError>) -> ChatResponse {
    result.unwrap_or_else(|err| panic!("model call failed: {err}"))
}

fn calls(response: &ChatResponse) -> Vec<(&str, &str, &str)> {
    response
        .tool_calls
        .iter()
        .map(|call| {
            (
                call.id.as_str(),
                call.name.as_str(),
                call.arguments.as_str(),
            )
        })
        .collect()
}

#[tokio::test]
async fn plain_answer_with_usage() {
    let mock = llm::start(MockConfig::default()).await;
    let model = openai(&mock).await;
    let request = request(
        vec![
            ChatMessage::new(Role::System, "Be brief."),
            ChatMessage::new(Role::User, "hello there"),
        ],
        &[],
    );
    let response = ok(model.chat(&request, None).await);
    assert_eq!(response.content, "You said: hello there");
    assert_eq!(response.finish, FinishReason::Stop);
    assert_eq!(response.model, "mock-model");
    let usage = Usage {
        input_tokens: 4,
        output_tokens: 4,
    };
    assert_eq!(response.usage, Some(usage));
    let stats = mock.stats();
    assert_eq!((stats.requests, stats.chat_completions), (1, 1));
    assert_eq!((stats.prompt_tokens, stats.completion_tokens), (4, 4));
    let sent = &mock.requests()[0].body;
    assert_eq!(sent["model"], "mock-model");
    assert_eq!(sent["stream"], false);
    assert_eq!(sent["messages"][0]["role"], "system");
}

#[tokio::test]
async fn streamed_deltas_arrive_in_order_and_make_the_answer() {
    let mock = llm::start(mock_config("token_latency = \"5ms\"")).await;
    let model = openai(&mock).await;
    let (result, deltas) = streamed(&*model, &user("one two three four")).await;
    let response = ok(result);
    assert_eq!(response.content, "You said: one two three four");
    assert_eq!(deltas, ["You", " said:", " one", " two", " three", " four"]);
    assert_eq!(response.finish, FinishReason::Stop);
    assert_eq!(
        response.usage,
        Some(Usage {
            input_tokens: 4,
            output_tokens: 6
        })
    );
    assert_eq!(
        mock.requests()[0].body["stream_options"]["include_usage"],
        true
    );
    assert_eq!(mock.stats().completion_tokens, 6);
}

const WEATHER_RULES: &str = r#"
[[rules]]
contains = "weather"
tool_calls = [
  { name = "get_weather", arguments = { city = "Paris", unit = "celsius" } },
  { name = "clock" },
]
follow_up = "Weather report: {tool_results}"
"#;

fn weather_request() -> ChatRequest {
    request(
        vec![ChatMessage::new(
            Role::User,
            "What is the weather in Paris?",
        )],
        &["get_weather", "clock"],
    )
}

fn expected_weather_calls() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        (
            "call_1",
            "get_weather",
            r#"{"city":"Paris","unit":"celsius"}"#,
        ),
        ("call_2", "clock", "{}"),
    ]
}

#[tokio::test]
async fn tool_calls_plain_and_streamed() {
    let mock = llm::start(mock_config(WEATHER_RULES)).await;
    let model = openai(&mock).await;
    let plain = ok(model.chat(&weather_request(), None).await);
    assert_eq!(calls(&plain), expected_weather_calls());
    assert_eq!(plain.finish, FinishReason::ToolCalls);
    assert_eq!(plain.content, "");
    assert_eq!(
        mock.requests()[0].body["tools"][0]["function"]["name"],
        "get_weather"
    );

    let (result, deltas) = streamed(&*model, &weather_request()).await;
    let streamed = ok(result);
    assert_eq!(calls(&streamed), expected_weather_calls());
    assert_eq!(streamed.finish, FinishReason::ToolCalls);
    assert!(deltas.is_empty(), "{deltas:?}");

    // The results go back; the follow-up includes them.
    let mut messages = weather_request().messages;
    messages.push(ChatMessage::tool_calls("", plain.tool_calls.clone()));
    messages.push(ChatMessage::tool_result("call_1", "sunny, 21 C"));
    messages.push(ChatMessage::tool_result("call_2", "12:00"));
    let follow_up = ok(model
        .chat(&request(messages, &["get_weather", "clock"]), None)
        .await);
    assert_eq!(follow_up.content, "Weather report: sunny, 21 C; 12:00");
    let sent = &mock.requests()[2].body["messages"];
    assert_eq!(sent[1]["tool_calls"][0]["id"], "call_1");
    assert_eq!(sent[2]["tool_call_id"], "call_1");
}

#[tokio::test]
async fn streamed_tool_calls_with_late_ids_assemble_by_index() {
    let mut config = mock_config(WEATHER_RULES);
    config.quirks = vec![Quirk::LateToolIds];
    config.token_latency = Duration::from_millis(2);
    let mock = llm::start(config).await;
    let model = openai(&mock).await;
    let (result, _) = streamed(&*model, &weather_request()).await;
    assert_eq!(calls(&ok(result)), expected_weather_calls());
}

#[tokio::test]
async fn empty_finish_reason_is_unknown_and_the_answer_intact() {
    let mock = llm::start(MockConfig {
        quirks: vec![Quirk::EmptyFinishReason],
        ..MockConfig::default()
    })
    .await;
    let model = openai(&mock).await;
    let plain = ok(model.chat(&user("hi"), None).await);
    assert_eq!(
        (plain.content.as_str(), plain.finish),
        ("You said: hi", FinishReason::Unknown)
    );
    let (result, _) = streamed(&*model, &user("hi")).await;
    let streamed = ok(result);
    assert_eq!(
        (streamed.content.as_str(), streamed.finish),
        ("You said: hi", FinishReason::Unknown)
    );
}

#[tokio::test]
async fn missing_usage_is_none() {
    let mock = llm::start(MockConfig {
        quirks: vec![Quirk::NoUsage],
        ..MockConfig::default()
    })
    .await;
    let model = openai(&mock).await;
    assert_eq!(ok(model.chat(&user("hi"), None).await).usage, None);
    let (result, _) = streamed(&*model, &user("hi")).await;
    assert_eq!(ok(result).usage, None);
    let embeddings = model
        .embed(&["x".to_owned()])
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(embeddings.usage, None);
}

#[tokio::test]
async fn rate_limit_retry_after_is_honoured_then_success() {
    let mock = llm::start(mock_config("retry_after = \"1s\"")).await;
    mock.push_faults([Fault::RateLimited]);
    let model = openai(&mock).await;
    let started = Instant::now();
    let response = ok(model.chat(&user("hi"), None).await);
    assert_eq!(response.content, "You said: hi");
    // The backoff alone would be 10 ms: the second attempt waited for Retry-After: 1.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let stats = mock.stats();
    assert_eq!((stats.requests, stats.faults), (2, 1));
}

#[tokio::test]
async fn server_errors_are_retried_then_success() {
    let mock = llm::start(MockConfig::default()).await;
    mock.push_faults([Fault::ServerError, Fault::Unavailable]);
    let model = openai(&mock).await;
    let (result, deltas) = streamed(&*model, &user("again")).await;
    assert_eq!(ok(result).content, "You said: again");
    assert_eq!(deltas.concat(), "You said: again");
    let stats = mock.stats();
    assert_eq!((stats.requests, stats.faults), (3, 2));
}

#[tokio::test]
async fn rate_limited_forever_fails_after_max_retries() {
    let mut config = mock_config("retry_after = \"50ms\"");
    config.fault = Some(Fault::RateLimited);
    let mock = llm::start(config).await;
    let model = openai(&mock).await;
    let started = Instant::now();
    let err = model.chat(&user("hi"), None).await.err();
    assert!(
        matches!(&err, Some(ModelError::RateLimited { retry_after: Some(wait), .. }) if *wait == Duration::from_millis(50)),
        "{err:?}"
    );
    assert_eq!(mock.stats().requests, 4, "1 attempt + max_retries 3");
    assert!(started.elapsed() < PROMPTLY);

    // Bounded in time as well: 100 retries allowed, but no retry starts after 300 ms.
    let mut settings = openai_settings(&mock);
    settings.max_retries = 100;
    settings.max_retry_time = Duration::from_millis(300);
    let model = build(&settings);
    let started = Instant::now();
    let err = model.chat(&user("hi"), None).await.err();
    assert!(
        matches!(err, Some(ModelError::RateLimited { .. })),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(300) + PROMPTLY);
    let attempts = mock.stats().requests - 4;
    assert!(
        (2..=7).contains(&attempts),
        "{attempts} attempts within 300 ms of 50 ms waits"
    );
}

#[tokio::test]
async fn insufficient_quota_is_not_retried() {
    let mock = llm::start(MockConfig::default()).await;
    mock.push_faults([Fault::InsufficientQuota]);
    let model = openai(&mock).await;
    let err = model.chat(&user("hi"), None).await.err();
    assert!(
        matches!(&err, Some(ModelError::QuotaExceeded { message, .. }) if message.contains("quota")),
        "{err:?}"
    );
    assert_eq!(mock.stats().requests, 1);
    assert!(!err.is_some_and(|err| err.is_retryable()));
}

#[tokio::test]
async fn a_hung_server_times_out_within_the_idle_timeout() {
    let mock = llm::start(MockConfig::default()).await;
    mock.push_faults([Fault::Hang, Fault::Hang]);
    let mut settings = openai_settings(&mock);
    settings.max_retries = 0;
    settings.idle_timeout = Duration::from_millis(200);
    let model = build(&settings);
    for stream in [false, true] {
        let started = Instant::now();
        let result = if stream {
            streamed(&*model, &user("hi")).await.0
        } else {
            model.chat(&user("hi"), None).await
        };
        let elapsed = started.elapsed();
        assert!(
            matches!(
                result,
                Err(ModelError::Timeout { phase: "waiting for a response", after, .. })
                    if after == Duration::from_millis(200)
            ),
            "stream {stream}: {result:?}"
        );
        assert!(
            elapsed >= Duration::from_millis(200) && elapsed < PROMPTLY,
            "{elapsed:?}"
        );
    }
    assert_eq!(mock.stats().requests, 2);
}

#[tokio::test]
async fn a_stalled_stream_times_out_after_the_first_delta_and_is_not_retried() {
    let mock = llm::start(MockConfig::default()).await;
    mock.push_faults([Fault::Stall]);
    let model = openai(&mock).await;
    let started = Instant::now();
    let (result, deltas) = streamed(&*model, &user("hello world")).await;
    assert!(
        matches!(
            result,
            Err(ModelError::Timeout {
                phase: "between stream chunks",
                ..
            })
        ),
        "{result:?}"
    );
    assert!(started.elapsed() < PROMPTLY);
    assert_eq!(deltas, ["You"]);
    // A delta was sent: retrying would repeat it, so the error is returned.
    assert_eq!(mock.stats().requests, 1);
}

#[tokio::test]
async fn a_healthy_slow_stream_outlives_the_idle_timeout() {
    // 12 chunks 60 ms apart: 700 ms in all, more than twice the 300 ms idle timeout.
    let mock = llm::start(mock_config("token_latency = \"60ms\"")).await;
    let model = openai(&mock).await;
    let (result, deltas) = streamed(&*model, &user("a b c d e f g h i j")).await;
    assert_eq!(ok(result).content, "You said: a b c d e f g h i j");
    assert_eq!(deltas.len(), 12);
    assert_eq!(mock.stats().requests, 1);
}

#[tokio::test]
async fn truncated_streams_and_bodies_are_errors_not_answers() {
    let mock = llm::start(MockConfig::default()).await;
    let model = openai(&mock).await;
    mock.push_faults([Fault::Truncate]);
    let (result, deltas) = streamed(&*model, &user("one two three four five six")).await;
    assert!(
        matches!(result, Err(ModelError::Connection { .. })),
        "{result:?}"
    );
    assert!(
        !deltas.is_empty() && deltas.concat().len() < "You said: one two three four five six".len()
    );
    assert_eq!(mock.stats().requests, 1, "deltas were sent: not retried");

    mock.push_faults([Fault::Truncate]);
    let result = model.chat(&user("one two"), None).await;
    assert!(
        matches!(result, Err(ModelError::MalformedResponse { .. })),
        "{result:?}"
    );
    assert_eq!(mock.stats().requests, 2);
}

#[tokio::test]
async fn a_malformed_chunk_is_an_error_not_a_truncated_answer() {
    let mock = llm::start(MockConfig::default()).await;
    let model = openai(&mock).await;
    mock.push_faults([Fault::Malformed]);
    let (result, _) = streamed(&*model, &user("one two three four")).await;
    assert!(
        matches!(result, Err(ModelError::MalformedResponse { .. })),
        "{result:?}"
    );
    mock.push_faults([Fault::Malformed]);
    let result = model.chat(&user("one two"), None).await;
    assert!(
        matches!(result, Err(ModelError::MalformedResponse { .. })),
        "{result:?}"
    );
    assert_eq!(
        mock.stats().requests,
        2,
        "malformed answers are not retried"
    );
}

#[tokio::test]
async fn an_html_error_body_is_a_provider_error_with_an_excerpt() {
    let mock = llm::start(MockConfig {
        fault: Some(Fault::HtmlError),
        ..MockConfig::default()
    })
    .await;
    let mut settings = openai_settings(&mock);
    settings.max_retries = 1;
    let model = build(&settings);
    let result = model.chat(&user("hi"), None).await;
    match result {
        Err(ModelError::Provider { status, body, .. }) => {
            assert_eq!(status, 500);
            assert!(body.contains("500 Internal Server Error"), "{body}");
            assert!(body.chars().count() <= 301);
        }
        other => panic!("expected a provider error: {other:?}"),
    }
    assert_eq!(mock.stats().requests, 2, "5xx is retried");
}

#[tokio::test]
async fn connection_errors_are_retried_then_reported() {
    let port = {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|err| panic!("{err}"));
        listener.local_addr().map(|addr| addr.port()).unwrap_or(9)
    };
    let settings = model_settings(
        &format!(
            "provider = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\nmodel = \"x\"\nmax_retries = 2\ninitial_backoff = \"10ms\"\nmax_backoff = \"20ms\""
        ),
        Path::new("troupe.toml"),
    );
    let started = Instant::now();
    let result = build(&settings).chat(&user("hi"), None).await;
    assert!(
        matches!(result, Err(ModelError::Connection { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < PROMPTLY);
}

#[tokio::test]
async fn embeddings_are_deterministic_and_match_the_scripted_model() {
    let mock = llm::start(MockConfig::default()).await;
    let model = openai(&mock).await;
    let inputs: Vec<String> = ["the cat sat", "the cat sat", "dogs bark"]
        .map(str::to_owned)
        .to_vec();
    let embeddings = model
        .embed(&inputs)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(embeddings.vectors.len(), 3);
    assert_eq!(embeddings.vectors[0], embeddings.vectors[1]);
    assert_ne!(embeddings.vectors[0], embeddings.vectors[2]);
    assert_eq!(embeddings.vectors[0].len(), 384);
    let norm: f32 = embeddings.vectors[2]
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt();
    assert!((norm - 1.0).abs() < 1e-4);
    assert_eq!(
        embeddings.usage,
        Some(Usage {
            input_tokens: 8,
            output_tokens: 0
        })
    );
    let scripted = build(&model_settings(
        "provider = \"scripted\"",
        Path::new("t.toml"),
    ));
    let local = scripted
        .embed(&inputs)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(local, embeddings);
    assert_eq!(mock.stats().embeddings, 1);
    assert_eq!(mock.stats().embedding_tokens, 8);
}

#[tokio::test]
async fn a_recorded_cassette_replays_offline() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let mock = llm::start(mock_config(WEATHER_RULES)).await;
    let cassette = dir.path().join("run.jsonl");
    let recorder = build(&openai_settings_with(
        &mock,
        &format!("record = \"{}\"", cassette.display()),
    ));

    // The pipeline as it ran: tool calls, the follow-up (streamed), a plain answer, embeddings.
    let first = weather_request();
    let second_messages = first.messages.clone();
    let run = |model: Arc<dyn ModelService>,
               first: ChatRequest,
               second_messages: Vec<ChatMessage>| async move {
        let calls = ok(model.chat(&first, None).await);
        let mut messages = second_messages;
        messages.push(ChatMessage::tool_calls("", calls.tool_calls.clone()));
        for call in &calls.tool_calls {
            messages.push(ChatMessage::tool_result(
                call.id.clone(),
                format!("result of {}", call.name),
            ));
        }
        let (follow_up, deltas) =
            streamed(&*model, &request(messages, &["get_weather", "clock"])).await;
        let plain = ok(model.chat(&user("thanks"), None).await);
        let vectors = model
            .embed(&["weather report".to_owned()])
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        (calls, ok(follow_up), deltas, plain, vectors)
    };
    let recorded = run(recorder, first.clone(), second_messages.clone()).await;
    assert_eq!(
        recorded.1.content,
        "Weather report: result of get_weather; result of clock"
    );
    let served = mock.stats();
    assert_eq!(served.chat_completions, 3);

    let lines = std::fs::read_to_string(&cassette).unwrap_or_default();
    assert_eq!(lines.lines().count(), 4);
    drop(mock);

    let replay_settings = model_settings(
        "provider = \"scripted\"\ncassette = \"run.jsonl\"",
        &dir.path().join("troupe.toml"),
    );
    let replayed = run(build(&replay_settings), first, second_messages).await;
    assert_eq!(replayed.0, recorded.0);
    assert_eq!(replayed.1, recorded.1);
    assert_eq!(replayed.2, recorded.2);
    assert_eq!(replayed.3, recorded.3);
    assert_eq!(replayed.4, recorded.4);

    // A fresh replay: unknown requests take the next recorded exchange, then none is left.
    let replay = build(&replay_settings);
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(ok(replay.chat(&user("something else"), None).await));
    }
    assert_eq!(answers[0], recorded.0);
    let err = replay.chat(&user("one more"), None).await.err();
    assert!(
        matches!(err, Some(ModelError::NoScriptedReply { .. })),
        "{err:?}"
    );
    let err = replay.embed(&["never recorded".to_owned()]).await.err();
    assert!(
        matches!(err, Some(ModelError::NoScriptedReply { .. })),
        "{err:?}"
    );
}

/// The example rules file (`examples/scripted/rules.toml`) through the scripted model.
#[tokio::test]
async fn scripted_rules_answer_call_tools_and_follow_up() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/troupe.toml");
    let settings = model_settings(
        "provider = \"scripted\"\nscript = \"scripted/rules.toml\"",
        &examples,
    );
    let model = build(&settings);
    let hello = ok(model.chat(&user("Hello!"), None).await);
    assert_eq!(
        hello.content,
        "Hello! Ask me to add two numbers, or about the weather."
    );
    assert_eq!(hello.finish, FinishReason::Stop);

    let ask = request(
        vec![ChatMessage::new(Role::User, "please add them")],
        &["calculator"],
    );
    let (result, deltas) = streamed(&*model, &ask).await;
    let call = ok(result);
    assert!(deltas.is_empty());
    assert_eq!(call.finish, FinishReason::ToolCalls);
    assert_eq!(
        call.tool_calls,
        [ToolCall {
            id: "call_1".into(),
            name: "calculator".into(),
            arguments: r#"{"expression":"2 + 2"}"#.into(),
        }]
    );
    let mut messages = ask.messages.clone();
    messages.push(ChatMessage::tool_calls("", call.tool_calls.clone()));
    messages.push(ChatMessage::tool_result("call_1", "4"));
    let (result, deltas) = streamed(&*model, &request(messages, &["calculator"])).await;
    let answer = ok(result);
    assert_eq!(answer.content, "2 + 2 = 4.");
    assert_eq!(deltas.concat(), answer.content);

    let other = ok(model.chat(&user("tell me a story"), None).await);
    assert_eq!(
        other.content,
        "I am a scripted model. You said: tell me a story"
    );
    assert_eq!(
        other.usage,
        Some(Usage {
            input_tokens: 4,
            output_tokens: 11
        })
    );
}

#[tokio::test]
async fn the_built_in_scripted_model_echoes_and_calls_named_tools() {
    let model = build(&model_settings(
        "provider = \"scripted\"\nlatency = \"20ms\"",
        Path::new("t.toml"),
    ));
    let started = Instant::now();
    let (result, deltas) = streamed(&*model, &user("hi there")).await;
    let echo = ok(result);
    assert!(started.elapsed() >= Duration::from_millis(20));
    assert_eq!(echo.content, "You said: hi there");
    assert_eq!(deltas, ["You", " said:", " hi", " there"]);
    assert_eq!(
        echo.usage,
        Some(Usage {
            input_tokens: 2,
            output_tokens: 4
        })
    );

    let ask = request(
        vec![ChatMessage::new(Role::User, "use the calculator")],
        &["calculator"],
    );
    let call = ok(model.chat(&ask, None).await);
    assert_eq!(calls(&call), [("call_1", "calculator", "{}")]);
    let mut messages = ask.messages.clone();
    messages.push(ChatMessage::tool_calls("", call.tool_calls.clone()));
    messages.push(ChatMessage::tool_result("call_1", "42"));
    let answer = ok(model.chat(&request(messages, &["calculator"]), None).await);
    assert_eq!(answer.content, "Here is what the tools returned: 42");
    assert_eq!(answer.finish, FinishReason::Stop);
}

// Hostile servers (issue 13, section 4): absurd Retry-After values, huge and endless answers,
// huge headers, error bodies that echo the request.

/// A mock answering every chat request `fault`, with these extra mock keys.
async fn hostile(fault: Fault, keys: &str) -> MockHandle {
    let mut config = mock_config(keys);
    config.fault = Some(fault);
    llm::start(config).await
}

/// `future`, failing the test instead of hanging when it takes longer than 30 s.
async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("no answer within 30 s"))
}

#[tokio::test]
async fn hostile_retry_after_values_are_clamped_to_max_retry_time() {
    // openai_settings: max_retry_time 5 s, 3 retries, backoff 10–50 ms.
    let max = Duration::from_secs(5);
    for (value, requests, retry_after) in [
        // Longer than max_retry_time (or than any Duration): clamped, so no retry fits.
        ("1e30", 1, Some(max)),
        ("100000000", 1, Some(max)),
        ("inf", 1, Some(max)),
        ("Fri, 31 Dec 9999 23:59:59 GMT", 1, Some(max)),
        // Unusable: ignored, the backoff applies.
        ("-1", 4, None),
        ("NaN", 4, None),
        ("soon", 4, None),
        // A date in the past: retry at once.
        ("Wed, 21 Oct 2015 07:28:00 GMT", 4, Some(Duration::ZERO)),
    ] {
        let mock = hostile(
            Fault::RateLimited,
            &format!("retry_after_values = [{value:?}]"),
        )
        .await;
        let model = openai(&mock).await;
        let started = Instant::now();
        let err = bounded(model.chat(&user("hi"), None)).await.err();
        assert!(
            matches!(&err, Some(ModelError::RateLimited { retry_after: got, .. }) if *got == retry_after),
            "Retry-After {value:?}: {err:?}"
        );
        assert_eq!(mock.stats().requests, requests, "Retry-After {value:?}");
        assert!(started.elapsed() < PROMPTLY, "Retry-After {value:?}");
    }
    // retry-after-ms too: a huge one is clamped, a negative one falls back to Retry-After.
    let mock = hostile(
        Fault::RateLimited,
        "retry_after_values = [\"2\"]\nretry_after_ms_values = [\"1e300\", \"-5\"]",
    )
    .await;
    let err = bounded(openai(&mock).await.chat(&user("hi"), None))
        .await
        .err();
    assert!(
        matches!(&err, Some(ModelError::RateLimited { retry_after: Some(wait), .. }) if *wait == max),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_huge_answer_fails_typed_at_the_bound_and_is_not_retried() {
    let mock = hostile(Fault::HugeBody, "").await;
    let limit = 1024 * 1024;
    let model = build(&openai_settings_with(
        &mock,
        &format!("max_response_bytes = {limit}"),
    ));
    let started = Instant::now();
    // A 100 MiB body, and a stream whose one event is 100 MiB.
    let whole = bounded(model.chat(&user("hi"), None)).await;
    let (stream, deltas) = bounded(streamed(&*model, &user("hi"))).await;
    for result in [whole, stream] {
        assert!(
            matches!(&result, Err(ModelError::ResponseTooLarge { limit: l, .. }) if *l == limit),
            "{result:?}"
        );
        let err = result
            .err()
            .map(|err| (err.is_retryable(), err.to_string()));
        assert_eq!(
            err,
            Some((
                false,
                format!("model m: the response is larger than {limit} bytes (max_response_bytes)")
            ))
        );
    }
    assert!(deltas.is_empty(), "{}", deltas.len());
    assert_eq!(mock.stats().requests, 2, "not retried");
    assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
    // The default bound (8 MiB) holds too, and embeddings are bounded as well.
    let model = openai(&mock).await;
    let err = bounded(model.chat(&user("hi"), None)).await.err();
    assert!(
        matches!(
            err,
            Some(ModelError::ResponseTooLarge {
                limit: 8_388_608,
                ..
            })
        ),
        "{err:?}"
    );
    let err = bounded(model.embed(&["x".to_owned()])).await.err();
    assert!(
        matches!(err, Some(ModelError::ResponseTooLarge { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_endless_answer_is_cut_at_the_bound() {
    // Endless valid chunks: only the assembled answer's bound stops them (data keeps
    // flowing, so the idle timeout never fires); an endless body: the body's bound.
    let mock = hostile(Fault::Endless, "").await;
    let model = build(&openai_settings_with(&mock, "max_response_bytes = 1000000"));
    let (stream, deltas) = bounded(streamed(&*model, &user("hi"))).await;
    assert!(
        matches!(
            stream,
            Err(ModelError::ResponseTooLarge {
                limit: 1_000_000,
                ..
            })
        ),
        "{stream:?}"
    );
    let received: usize = deltas.iter().map(String::len).sum();
    assert!(received <= 1_000_000, "{received} bytes of deltas");
    let whole = bounded(model.chat(&user("hi"), None)).await;
    assert!(
        matches!(whole, Err(ModelError::ResponseTooLarge { .. })),
        "{whole:?}"
    );
    assert_eq!(mock.stats().requests, 2, "not retried");
}

#[tokio::test]
async fn a_huge_header_is_a_connection_error_naming_no_url() {
    let mock = hostile(Fault::HugeHeader, "").await;
    let model = openai(&mock).await;
    let err = bounded(model.chat(&user("hi"), None)).await.err();
    let text = err.as_ref().map(ToString::to_string).unwrap_or_default();
    assert!(matches!(err, Some(ModelError::Connection { .. })), "{text}");
    assert_eq!(mock.stats().requests, 4, "a connection error is retried");
    for leak in ["127.0.0.1", &mock.addr().port().to_string(), "http", "/v1"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    // The same server answers normally afterwards.
    mock.set_fault(None);
    assert_eq!(
        ok(model.chat(&user("hi"), None).await).content,
        "You said: hi"
    );
}

#[tokio::test]
async fn an_error_body_echoing_the_request_is_redacted() {
    let var = format!("TROUPE_IT_MODELS_ECHO_KEY_{}", std::process::id());
    std::env::set_var(&var, "sk-test-SECRET");
    let mock = hostile(Fault::Echo, "").await;
    let model = build(&openai_settings_with(
        &mock,
        &format!("api_key_env = \"{var}\""),
    ));
    // The server did echo the key and the URL...
    let (streamed_result, _) = bounded(streamed(&*model, &user("hi"))).await;
    let requests = mock.requests();
    assert_eq!(
        requests[0].authorization.as_deref(),
        Some("Bearer sk-test-SECRET")
    );
    // ...but neither reaches the error.
    for err in [
        bounded(model.chat(&user("hi"), None)).await.err(),
        streamed_result.err(),
        bounded(model.embed(&["x".to_owned()])).await.err(),
    ] {
        let text = err.as_ref().map(ToString::to_string).unwrap_or_default();
        assert!(
            matches!(err, Some(ModelError::InvalidRequest { .. })),
            "{text}"
        );
        assert!(text.contains("cannot route [url]"), "{text}");
        assert!(text.contains("Bearer [redacted]"), "{text}");
        for leak in ["sk-test-SECRET", "127.0.0.1", "http"] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }
    }
    std::env::remove_var(&var);
}

//! The OpenAI-compatible clients, the fallback chains and the circuit breaker against
//! the shared stand-in for the remote APIs (`voxq-stub`), which checks what we send
//! (path, headers, JSON body, multipart fields) and answers in OpenAI's documented wire
//! format.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use stub::{error, Reply, Stub};
use voxq_providers::{
    chat_model, BreakerConfig, BreakerState, ChatChain, ChatMessage, ChatModel, ChatRequest,
    JsonSchema, ManualClock, MaxTokensField, OpenAiChat, OpenAiTranscriber, ProviderConfig,
    ProviderError, Transcriber, TranscriberChain, TranscriptionRequest,
};

// --- documented answers -------------------------------------------------------------

fn completion(content: &str, tokens_in: u64, tokens_out: u64) -> Reply {
    stub::completion("gpt-4o-mini-2024-07-18", content, tokens_in, tokens_out)
}

fn verbose_transcription() -> Reply {
    Reply::Json(json!({
        "task": "transcribe",
        "language": "english",
        "duration": 4.2,
        "text": "Hello there. Please call me back.",
        "segments": [
            {"id": 0, "seek": 0, "start": 0.0, "end": 1.6, "text": " Hello there.",
             "tokens": [50364, 2425, 456, 13, 50444], "temperature": 0.0,
             "avg_logprob": -0.21, "compression_ratio": 0.9, "no_speech_prob": 0.01},
            {"id": 1, "seek": 0, "start": 1.6, "end": 4.2, "text": " Please call me back.",
             "tokens": [50444, 2555, 818, 385, 646, 13, 50574], "temperature": 0.0,
             "avg_logprob": -0.35, "compression_ratio": 0.9, "no_speech_prob": 0.02}
        ],
        "usage": {"type": "duration", "seconds": 5}
    }))
}

// --- helpers ------------------------------------------------------------------------

fn config(stub: &Stub, name: &str, model: &str) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        base_url: stub.base_url(),
        api_key_env: None,
        model: model.into(),
        timeout_ms: 5_000,
        ..ProviderConfig::default()
    }
}

fn chat_client(stub: &Stub, name: &str, key: Option<&str>) -> Arc<dyn ChatModel> {
    Arc::new(OpenAiChat::new(&config(stub, name, "gpt-4o-mini"), key).unwrap())
}

fn question() -> ChatRequest {
    ChatRequest {
        messages: vec![
            ChatMessage::system("Summarize the voice message."),
            ChatMessage::user("Hello there. Please call me back."),
        ],
        max_tokens: Some(100),
        temperature: Some(0.2),
        ..ChatRequest::default()
    }
}

fn rubric_schema() -> JsonSchema {
    JsonSchema {
        name: "fluency_rubric".into(),
        schema: json!({
            "type": "object",
            "properties": {
                "fluency": {"type": "integer"},
                "corrections": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["fluency", "corrections"],
            "additionalProperties": false
        }),
        strict: true,
    }
}

fn breaker(threshold: u32) -> BreakerConfig {
    BreakerConfig {
        failure_threshold: threshold,
        cool_down_ms: 30_000,
    }
}

fn voice_note(language: Option<&str>) -> TranscriptionRequest {
    TranscriptionRequest {
        model: None,
        audio: bytes::Bytes::from_static(b"OggS\0fake voice note bytes"),
        decoded: None,
        file_name: "voice.oga".into(),
        language: language.map(Into::into),
        engine: Default::default(),
    }
}

// --- chat ---------------------------------------------------------------------------

#[tokio::test]
async fn chat_sends_the_documented_request_and_reads_usage() {
    let stub = Stub::start(
        &["gpt-4o-mini"],
        Some("sk-test"),
        completion("Call back.", 27, 4),
    )
    .await;
    let mut cfg = config(&stub, "openai", "gpt-4o-mini");
    cfg.price_in_per_mtok = 0.15;
    cfg.price_out_per_mtok = 0.60;
    let chain = ChatChain::new(
        vec![Arc::new(OpenAiChat::new(&cfg, Some("sk-test")).unwrap())],
        BreakerConfig::default(),
    );

    let served = chain.complete(&question()).await.unwrap();

    assert_eq!(
        stub.chat_bodies(),
        vec![json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Summarize the voice message."},
                {"role": "user", "content": "Hello there. Please call me back."}
            ],
            "max_tokens": 100,
            "temperature": 0.2
        })]
    );
    assert_eq!(served.value.content, "Call back.");
    assert_eq!(served.value.json, None);
    assert_eq!((served.value.tokens_in, served.value.tokens_out), (27, 4));
    assert_eq!(served.value.model, "gpt-4o-mini-2024-07-18");
    assert_eq!(
        (served.provider.as_str(), served.model.as_str()),
        ("openai", "gpt-4o-mini")
    );
    assert!(served.failed.is_empty());
    let usage = served.usage();
    assert_eq!((usage.tokens_in, usage.tokens_out), (27, 4));
    assert!((usage.cost_usd - (27.0 * 0.15 + 4.0 * 0.60) / 1e6).abs() < 1e-12);
    stub.assert_clean();
}

#[tokio::test]
async fn chat_can_send_max_completion_tokens_and_omit_optional_fields() {
    let stub = Stub::start(&["o4-mini"], None, completion("ok", 1, 1)).await;
    let mut cfg = config(&stub, "openai", "o4-mini");
    cfg.max_tokens_field = MaxTokensField::MaxCompletionTokens;
    let model = OpenAiChat::new(&cfg, None).unwrap();
    let mut request = question();
    request.temperature = None;
    model.complete(&request).await.unwrap();
    request.max_tokens = None;
    model.complete(&request).await.unwrap();
    let bodies = stub.chat_bodies();
    assert_eq!(bodies[0]["max_completion_tokens"], 100);
    for body in &bodies {
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert!(
            !keys
                .iter()
                .any(|k| *k == "max_tokens" || *k == "temperature"),
            "{body}"
        );
    }
    assert!(bodies[1].get("max_completion_tokens").is_none());
    stub.assert_clean();
}

#[tokio::test]
async fn structured_output_sends_the_schema_and_parses_the_answer() {
    let answer = r#"{"fluency": 7, "corrections": ["call me back"]}"#;
    let stub = Stub::start(&["gpt-4o-mini"], Some("k"), completion(answer, 50, 12)).await;
    let model = chat_client(&stub, "openai", Some("k"));
    let request = ChatRequest {
        schema: Some(rubric_schema()),
        ..question()
    };

    let response = model.complete(&request).await.unwrap();

    assert_eq!(
        stub.chat_bodies()[0]["response_format"],
        json!({
            "type": "json_schema",
            "json_schema": {
                "name": "fluency_rubric",
                "schema": rubric_schema().schema,
                "strict": true
            }
        })
    );
    assert_eq!(
        response.json,
        Some(json!({"fluency": 7, "corrections": ["call me back"]}))
    );
    assert_eq!(response.content, answer);
    assert_eq!((response.tokens_in, response.tokens_out), (50, 12));
    stub.assert_clean();
}

#[tokio::test]
async fn content_that_is_not_json_is_an_invalid_response() {
    let stub = Stub::start(
        &["gpt-4o-mini"],
        None,
        completion("Sure! {\"fluency\": 7", 5, 5),
    )
    .await;
    let model = chat_client(&stub, "openai", None);
    let request = ChatRequest {
        schema: Some(rubric_schema()),
        ..question()
    };
    let err = model.complete(&request).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidResponse(_)), "{err:?}");
    assert!(err.to_string().contains("not valid JSON"), "{err}");
    assert!(err.is_fallback_worthy());

    // Without a schema the same text is a fine answer.
    assert!(model.complete(&question()).await.unwrap().json.is_none());

    // A body that is not a completion at all.
    stub.queue(Reply::Json(json!({"unexpected": true})));
    let err = model.complete(&question()).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidResponse(_)), "{err:?}");
    stub.assert_clean();
}

#[tokio::test]
async fn refusals_are_invalid_responses() {
    let stub = Stub::start(
        &["gpt-4o-mini"],
        None,
        Reply::Json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                "refusal": "I can't help with that."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
        })),
    )
    .await;
    let err = chat_client(&stub, "openai", None)
        .complete(&question())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
}

#[tokio::test]
async fn rate_limit_falls_back_to_the_next_provider() {
    let first = Stub::start(&["gpt-4o-mini"], Some("a"), completion("from first", 1, 1)).await;
    first.queue(Reply::Status {
        status: 429,
        body: json!({"error": {"message": "Rate limit reached for requests", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
        headers: vec![("retry-after", "7")],
    });
    let second = Stub::start(&["gpt-4o-mini"], Some("b"), completion("from second", 3, 2)).await;
    let chain = ChatChain::new(
        vec![
            chat_client(&first, "first", Some("a")),
            chat_client(&second, "second", Some("b")),
        ],
        BreakerConfig::default(),
    );

    let served = chain.complete(&question()).await.unwrap();
    assert_eq!(served.provider, "second");
    assert_eq!(served.value.content, "from second");
    assert_eq!(served.failed.len(), 1);
    assert_eq!(served.failed[0].provider, "first");
    assert_eq!(
        served.failed[0].error,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            message: "Rate limit reached for requests".into()
        }
    );
    assert_eq!((first.hits(), second.hits()), (1, 1));

    // One failure does not open the breaker: the first provider serves again.
    let served = chain.complete(&question()).await.unwrap();
    assert_eq!(served.provider, "first");
    assert_eq!((first.hits(), second.hits()), (2, 1));
    first.assert_clean();
    second.assert_clean();
}

#[tokio::test]
async fn server_errors_and_refused_keys_fall_back() {
    let broken = Stub::start(
        &["gpt-4o-mini"],
        None,
        error(500, "The server had an error"),
    )
    .await;
    let wrong_key = Stub::start(&["gpt-4o-mini"], Some("right"), completion("x", 1, 1)).await;
    let good = Stub::start(&["gpt-4o-mini"], None, completion("ok", 1, 1)).await;
    let chain = ChatChain::new(
        vec![
            chat_client(&broken, "broken", None),
            chat_client(&wrong_key, "wrong-key", Some("wrong")),
            chat_client(&good, "good", None),
        ],
        BreakerConfig::default(),
    );
    let served = chain.complete(&question()).await.unwrap();
    assert_eq!(served.provider, "good");
    let errors: Vec<_> = served.failed.iter().map(|a| a.error.clone()).collect();
    assert_eq!(
        errors,
        vec![
            ProviderError::Server {
                status: 500,
                message: "The server had an error".into()
            },
            ProviderError::Client {
                status: 401,
                message: "Incorrect API key provided".into()
            },
        ]
    );
    broken.assert_clean();
    good.assert_clean();
}

#[tokio::test]
async fn a_timeout_falls_back_quickly() {
    let slow = Stub::start(
        &["gpt-4o-mini"],
        None,
        Reply::Slow(Duration::from_secs(5), Box::new(completion("late", 1, 1))),
    )
    .await;
    let fast = Stub::start(&["gpt-4o-mini"], None, completion("fast", 1, 1)).await;
    let mut slow_config = config(&slow, "slow", "gpt-4o-mini");
    slow_config.timeout_ms = 100;
    let chain = ChatChain::new(
        vec![
            Arc::new(OpenAiChat::new(&slow_config, None).unwrap()),
            chat_client(&fast, "fast", None),
        ],
        BreakerConfig::default(),
    );

    let started = Instant::now();
    let served = chain.complete(&question()).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(served.provider, "fast");
    assert_eq!(
        served.failed[0].error,
        ProviderError::Timeout {
            after: Duration::from_millis(100)
        }
    );
    assert_eq!(slow.hits(), 1);
}

#[tokio::test]
async fn a_bad_request_does_not_fall_back() {
    let first = Stub::start(
        &["gpt-4o-mini"],
        None,
        error(400, "Invalid schema for response_format 'x'"),
    )
    .await;
    let second = Stub::start(&["gpt-4o-mini"], None, completion("never", 1, 1)).await;
    let chain = ChatChain::new(
        vec![
            chat_client(&first, "first", None),
            chat_client(&second, "second", None),
        ],
        BreakerConfig::default(),
    );
    let err = chain.complete(&question()).await.unwrap_err();
    assert_eq!(second.hits(), 0);
    assert_eq!(
        err.last(),
        Some(&ProviderError::Client {
            status: 400,
            message: "Invalid schema for response_format 'x'".into()
        })
    );
    assert!(!err.is_transient());
    assert_eq!(err.code(), "provider-request-refused");
    assert!(err.to_string().contains("Invalid schema"), "{err}");
    // Our own bad request says nothing about the provider's health.
    for _ in 0..5 {
        chain.complete(&question()).await.unwrap_err();
    }
    assert_eq!(
        chain.breaker("first").unwrap().state(),
        BreakerState::Closed
    );
    assert_eq!(first.hits(), 6);
}

#[tokio::test]
async fn when_all_fail_the_error_lists_every_attempt() {
    let first = Stub::start(&["gpt-4o-mini"], None, error(503, "overloaded")).await;
    let second = Stub::start(&["gpt-4o-mini"], None, error(502, "bad gateway")).await;
    let chain = ChatChain::new(
        vec![
            chat_client(&first, "first", None),
            chat_client(&second, "second", None),
        ],
        BreakerConfig::default(),
    );
    let err = chain.complete(&question()).await.unwrap_err();
    assert_eq!(err.attempts.len(), 2);
    assert!(err.is_transient());
    assert_eq!(err.code(), "provider-server-error");
    assert_eq!(
        err.to_string(),
        "all 2 providers failed: 'first' (gpt-4o-mini): server error 503: overloaded; \
         'second' (gpt-4o-mini): server error 502: bad gateway"
    );

    let empty = ChatChain::new(vec![], BreakerConfig::default());
    let err = empty.complete(&question()).await.unwrap_err();
    assert_eq!(err.to_string(), "no provider is configured");
    assert_eq!(err.code(), "no-provider");
}

#[tokio::test]
async fn the_breaker_stops_calling_a_failing_provider_and_retries_after_the_cool_down() {
    let flaky = Stub::start(&["gpt-4o-mini"], None, error(500, "down")).await;
    let backup = Stub::start(&["gpt-4o-mini"], None, completion("backup", 1, 1)).await;
    let clock = Arc::new(ManualClock::new());
    let chain = ChatChain::with_clock(
        vec![
            chat_client(&flaky, "flaky", None),
            chat_client(&backup, "backup", None),
        ],
        breaker(3),
        clock.clone(),
    );

    for call in 1..=6 {
        let served = chain.complete(&question()).await.unwrap();
        assert_eq!(served.provider, "backup");
        if call > 3 {
            assert_eq!(
                served.failed[0].error,
                ProviderError::CircuitOpen {
                    provider: "flaky".into()
                }
            );
        }
    }
    assert_eq!(flaky.hits(), 3, "calls reached an open breaker");
    assert_eq!(chain.breaker("flaky").unwrap().state(), BreakerState::Open);

    // After the cool-down one trial goes through; it fails, so the breaker opens again.
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        chain.breaker("flaky").unwrap().state(),
        BreakerState::HalfOpen
    );
    chain.complete(&question()).await.unwrap();
    assert_eq!(flaky.hits(), 4);
    chain.complete(&question()).await.unwrap();
    assert_eq!(flaky.hits(), 4);
    assert_eq!(chain.breaker("flaky").unwrap().state(), BreakerState::Open);

    // The provider recovers: the next trial succeeds and closes the breaker.
    flaky.set_default(completion("flaky is back", 1, 1));
    clock.advance(Duration::from_secs(30));
    let served = chain.complete(&question()).await.unwrap();
    assert_eq!(served.provider, "flaky");
    assert!(served.failed.is_empty());
    assert_eq!(
        chain.breaker("flaky").unwrap().state(),
        BreakerState::Closed
    );
    chain.complete(&question()).await.unwrap();
    assert_eq!((flaky.hits(), backup.hits()), (6, 8));

    // What metrics read: 3 + 1 faults, 3 + 1 calls short-circuited, opened twice.
    let stats = chain.stats();
    let (f, b) = (&stats[0], &stats[1]);
    assert_eq!(
        (f.provider.as_str(), b.provider.as_str()),
        ("flaky", "backup")
    );
    assert_eq!(f.breaker, BreakerState::Closed);
    assert_eq!(
        (f.ok, f.fault, f.refused, f.short_circuited, f.opened),
        (2, 4, 0, 4, 2)
    );
    assert_eq!(f.failures.get("provider-server-error"), Some(&4), "{f:?}");
    assert_eq!((b.ok, b.fault, b.short_circuited, b.opened), (8, 0, 0, 0));
    flaky.assert_clean();
    backup.assert_clean();
}

#[tokio::test]
async fn keys_come_from_the_named_environment_variable() {
    // A variable cargo sets for every test process: setting one here with
    // `std::env::set_var` would race with other threads reading the environment
    // (reqwest reads the proxy variables).
    let key = env!("CARGO_PKG_NAME");
    assert_eq!(std::env::var("CARGO_PKG_NAME").as_deref(), Ok(key));
    let stub = Stub::start(&["gpt-4o-mini"], Some(key), completion("ok", 1, 1)).await;
    let mut cfg = config(&stub, "openai", "gpt-4o-mini");
    cfg.api_key_env = Some("CARGO_PKG_NAME".into());
    let model = chat_model(&cfg).unwrap();
    assert_eq!(model.name(), "openai");
    model.complete(&question()).await.unwrap();

    cfg.api_key_env = Some("VOXQ_TEST_PROVIDERS_KEY_ABSENT".into());
    let err = OpenAiChat::from_config(&cfg).unwrap_err();
    assert_eq!(err.code(), "provider-misconfigured");
    assert!(
        err.to_string().contains("VOXQ_TEST_PROVIDERS_KEY_ABSENT"),
        "{err}"
    );
    // The key never shows in debug output.
    assert!(
        !format!("{:?}", OpenAiChat::new(&cfg, Some("sk-secret")).unwrap()).contains("sk-secret")
    );
    stub.assert_clean();
}

#[test]
fn provider_config_deserializes_with_defaults() {
    let cfg: ProviderConfig = serde_json::from_str(
        r#"{"name": "groq", "base_url": "https://api.groq.com/openai/v1",
            "api_key_env": "GROQ_API_KEY", "model": "whisper-large-v3-turbo",
            "kind": "openai-compatible", "price_per_audio_minute": 0.000667}"#,
    )
    .unwrap();
    assert_eq!(cfg.timeout_ms, 30_000);
    assert_eq!(cfg.max_tokens_field, MaxTokensField::MaxTokens);
    assert_eq!(cfg.price().audio_cost_usd(90.0), 0.000667 * 1.5);
    let round_trip: ProviderConfig =
        serde_json::from_value(serde_json::to_value(&cfg).unwrap()).unwrap();
    assert_eq!(round_trip, cfg);
    assert!(serde_json::from_str::<ProviderConfig>(r#"{"api_key": "sk-x"}"#).is_err());
}

// --- transcription ------------------------------------------------------------------

#[tokio::test]
async fn transcription_sends_the_documented_multipart_form() {
    let stub = Stub::start(&["whisper-1"], Some("sk-t"), verbose_transcription()).await;
    let model =
        OpenAiTranscriber::new(&config(&stub, "openai", "whisper-1"), Some("sk-t")).unwrap();

    let transcript = model.transcribe(&voice_note(Some("en"))).await.unwrap();

    let uploads = stub.uploads();
    let fields = &uploads[0];
    let field = |name: &str| fields.iter().find(|f| f.name == name).unwrap();
    assert_eq!(field("file").file_name.as_deref(), Some("voice.ogg"));
    assert_eq!(field("file").content_type.as_deref(), Some("audio/ogg"));
    assert_eq!(field("file").data, b"OggS\0fake voice note bytes");
    assert_eq!(field("model").text(), "whisper-1");
    assert_eq!(field("response_format").text(), "verbose_json");
    assert_eq!(field("timestamp_granularities[]").text(), "segment");
    assert_eq!(field("language").text(), "en");

    assert_eq!(transcript.text, "Hello there. Please call me back.");
    assert_eq!(transcript.language, "en");
    assert_eq!(transcript.duration_s, 4.2);
    assert_eq!(transcript.segments.len(), 2);
    let second = &transcript.segments[1];
    assert_eq!((second.start, second.end), (1.6, 4.2));
    assert_eq!(second.text, "Please call me back.");
    assert_eq!((second.avg_logprob, second.no_speech_prob), (-0.35, 0.02));
    stub.assert_clean();
}

#[tokio::test]
async fn transcription_detects_language_and_tolerates_plain_answers() {
    let stub = Stub::start(&["whisper-large-v3"], None, verbose_transcription()).await;
    let model = OpenAiTranscriber::new(&config(&stub, "local", "whisper-large-v3"), None).unwrap();

    let detected = model.transcribe(&voice_note(None)).await.unwrap();
    assert_eq!(
        detected.language, "en",
        "the language name maps to its code"
    );
    assert!(stub.uploads()[0].iter().all(|f| f.name != "language"));

    stub.queue(Reply::Json(json!({"text": " Just the text."})));
    let plain = model.transcribe(&voice_note(None)).await.unwrap();
    assert_eq!(plain.text, "Just the text.");
    assert!(plain.segments.is_empty());
    assert_eq!((plain.language.as_str(), plain.duration_s), ("", 0.0));
    stub.assert_clean();
}

#[tokio::test]
async fn transcriber_chain_falls_back_and_prices_audio_minutes() {
    let down = Stub::start(&["whisper-1"], None, error(503, "Service Unavailable")).await;
    let up = Stub::start(&["whisper-large-v3-turbo"], None, verbose_transcription()).await;
    let mut up_config = config(&up, "groq", "whisper-large-v3-turbo");
    up_config.price_per_audio_minute = 0.04;
    let providers: Vec<Arc<dyn Transcriber>> = vec![
        Arc::new(OpenAiTranscriber::new(&config(&down, "openai", "whisper-1"), None).unwrap()),
        Arc::new(OpenAiTranscriber::new(&up_config, None).unwrap()),
    ];
    let chain = TranscriberChain::new(providers, BreakerConfig::default());

    let served = chain.transcribe(&voice_note(None)).await.unwrap();
    assert_eq!(
        (served.provider.as_str(), served.model.as_str()),
        ("groq", "whisper-large-v3-turbo")
    );
    assert_eq!(served.failed[0].error.code(), "provider-server-error");
    let usage = served.usage();
    assert_eq!(usage.provider, "groq");
    assert!((usage.cost_usd - 4.2 / 60.0 * 0.04).abs() < 1e-12);
    assert_eq!((down.hits(), up.hits()), (1, 1));
    down.assert_clean();
    up.assert_clean();
}

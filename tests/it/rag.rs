//! RAG end to end: chunking properties, atomic replace, no-op re-adds, filters, hybrid search,
//! importance, chunk context, fixed dimensions, delete and list, persistence on Redis and two
//! daemons kept in sync, embeddings over HTTP with usage recorded, thread memory, and group
//! isolation through the tool, the CLI and a workflow (the support example answering from a
//! knowledge base added with the CLI).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use troupe_agents::embedder::ModelEmbedder;
use troupe_agents::rag::{
    chunk, AddStatus, Caller, ChunkOptions, Embedder, LocalEmbedder, NewDocument, Query, Rag,
    RagError, RagSearchTool, SearchRequest,
};
use troupe_agents::{Ask, Policies, Prices, UsageLedger};
use troupe_config::{RagSettings, SearchType};
use troupe_runtime::limit::Limiters;
use troupe_runtime::store::{MemoryStore, Store};
use troupe_testkit::{eventually, WAIT};
use troupe_tools::{Tool, ToolContext, ToolError, ToolRegistry};

use crate::support::agents::Rig;
use crate::support::llm::{self, mock_config};
use crate::support::redis::{self, redis_url, unique_prefix};

fn settings() -> RagSettings {
    let config = troupe_config::load_str("", "troupe.toml", &[]).expect("defaults");
    RagSettings {
        chunk_size: 200,
        chunk_overlap: 60,
        max_chunk: 300,
        embed_batch: 4,
        ..config.rag
    }
}

fn rag_on(store: Arc<dyn Store>) -> Rag {
    let settings = settings();
    let embedder = Arc::new(LocalEmbedder::new(settings.dimensions));
    Rag::new(store, settings, embedder)
}

fn memory_rag() -> Rag {
    rag_on(Arc::new(MemoryStore::new()))
}

fn acme() -> Caller {
    Caller::new("acme", "ann", "test")
}

fn doc(key: &str, content: &str) -> NewDocument {
    NewDocument {
        key: key.to_owned(),
        content: content.to_owned(),
        ..NewDocument::default()
    }
}

async fn add(rag: &Rag, caller: &Caller, doc: NewDocument) -> AddStatus {
    rag.add(caller, doc)
        .await
        .unwrap_or_else(|err| panic!("add: {err}"))
        .status
}

async fn search(
    rag: &Rag,
    caller: &Caller,
    request: SearchRequest,
) -> Vec<troupe_agents::rag::Hit> {
    rag.search(caller, request)
        .await
        .unwrap_or_else(|err| panic!("search: {err}"))
}

fn keys(hits: &[troupe_agents::rag::Hit]) -> Vec<String> {
    hits.iter().map(|h| h.key.clone()).collect()
}

// ---- chunking ----------------------------------------------------------------------------

/// Checks the chunking invariants of `text` cut with `options`.
fn check_chunks(text: &str, options: ChunkOptions) {
    let chunks = chunk(text, &options);
    assert!(!chunks.is_empty());
    for (i, c) in chunks.iter().enumerate() {
        let len = c.text.chars().count();
        assert_eq!(&text[c.start..c.end], c.text, "chunk {i} is not a span");
        assert!(
            len <= options.max,
            "chunk {i} has {len} > cap {}",
            options.max
        );
        assert_eq!(c.text.trim(), c.text, "chunk {i} is not trimmed");
        // Starts at a sentence start: the text's start, or after white space that follows
        // a sentence end or a line break (or a cut of an over-long sentence).
        let before = text[..c.start].trim_end();
        let sentence_start = before.is_empty()
            || before.ends_with(['.', '!', '?'])
            || text[before.len()..c.start].contains('\n')
            || len == options.max.min(len);
        assert!(
            sentence_start,
            "chunk {i} starts mid-sentence: {:?}",
            c.text
        );
    }
    for pair in chunks.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(b.start > a.start, "no progress");
        if b.start < a.end {
            let shared = text[b.start..a.end].chars().count();
            assert!(
                shared <= options.overlap,
                "overlap {shared} > {}",
                options.overlap
            );
            // Overlap never crosses a paragraph break.
            assert!(!text[b.start..a.end].contains("\n\n"));
        }
    }
    // Every sentence of the text is in some chunk.
    let mut covered = vec![false; text.len()];
    for c in &chunks {
        covered[c.start..c.end].iter_mut().for_each(|x| *x = true);
    }
    for (at, ch) in text.char_indices() {
        if !ch.is_whitespace() {
            assert!(covered[at], "{ch:?} at {at} is in no chunk");
        }
    }
}

#[test]
fn chunking_keeps_sizes_overlap_cap_and_sentence_boundaries() {
    let sentence = |i: usize| format!("Sentence number {i} talks about topic {}.", i % 7);
    let paragraph =
        |from: usize, n: usize| (from..from + n).map(sentence).collect::<Vec<_>>().join(" ");
    let long_word_sentence = "x".repeat(700);
    let text = format!(
        "{}\n\n{}\n\n{}\n\n{long_word_sentence}. {}\n- a list item\n- another item",
        paragraph(0, 3),
        paragraph(3, 20),
        paragraph(23, 2),
        paragraph(25, 4)
    );
    for options in [
        ChunkOptions {
            size: 200,
            overlap: 60,
            max: 300,
        },
        ChunkOptions {
            size: 120,
            overlap: 0,
            max: 120,
        },
        ChunkOptions {
            size: 500,
            overlap: 200,
            max: 800,
        },
    ] {
        check_chunks(&text, options);
    }
    // A paragraph that fits in a chunk is never cut: some chunk holds it whole.
    let chunks = chunk(
        &text,
        &ChunkOptions {
            size: 200,
            overlap: 60,
            max: 300,
        },
    );
    let short = paragraph(23, 2);
    assert!(short.chars().count() <= 200);
    assert!(
        chunks.iter().any(|c| c.text.contains(&short)),
        "{chunks:#?}"
    );
    // A sentence longer than the cap is cut into pieces of at most the cap.
    let pieces: Vec<_> = chunks
        .iter()
        .filter(|c| c.text.starts_with("xxx"))
        .collect();
    assert!(pieces.len() >= 3, "{pieces:?}");
    // Inside a long paragraph, the next chunk repeats the previous one's last sentences.
    let overlapping = chunks.windows(2).filter(|p| p[1].start < p[0].end).count();
    assert!(overlapping > 0);
}

// ---- ingest and search -------------------------------------------------------------------

/// An embedder that holds every batch containing `BETA` until released.
struct Gated {
    inner: LocalEmbedder,
    entered: Notify,
    release: Notify,
}

#[async_trait]
impl Embedder for Gated {
    fn name(&self) -> &str {
        "gated"
    }

    async fn embed(&self, caller: &Caller, texts: &[String]) -> Result<Vec<Vec<f32>>, RagError> {
        if texts.iter().any(|t| t.contains("BETA")) {
            self.entered.notify_one();
            self.release.notified().await;
        }
        self.inner.embed(caller, texts).await
    }
}

#[tokio::test]
async fn replacing_a_key_is_atomic_and_the_same_document_is_a_no_op() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let gated = Arc::new(Gated {
        inner: LocalEmbedder::new(64),
        entered: Notify::new(),
        release: Notify::new(),
    });
    let rag = Rag::new(store.clone(), settings(), gated.clone());
    let v1 = doc("guide", "The ALPHA procedure resets the modem.");
    assert_eq!(add(&rag, &acme(), v1.clone()).await, AddStatus::Added);
    // The same document again writes nothing.
    let state = store
        .hgetall("rag:acme:default:state")
        .await
        .expect("state");
    assert_eq!(add(&rag, &acme(), v1).await, AddStatus::Unchanged);
    assert_eq!(
        store
            .hgetall("rag:acme:default:state")
            .await
            .expect("state"),
        state
    );

    let writer = {
        let rag = rag.clone();
        tokio::spawn(async move {
            rag.add(
                &acme(),
                doc("guide", "The BETA procedure flashes the firmware."),
            )
            .await
        })
    };
    gated.entered.notified().await;
    // While the new version is being embedded, the old one is what searches find.
    let hits = search(&rag, &acme(), SearchRequest::text("procedure")).await;
    assert_eq!(hits.len(), 1);
    assert!(hits[0].text.contains("ALPHA"), "{hits:?}");
    gated.release.notify_one();
    let outcome = writer.await.expect("join").expect("replace");
    assert_eq!(outcome.status, AddStatus::Replaced);
    let hits = search(&rag, &acme(), SearchRequest::text("procedure")).await;
    assert_eq!(hits.len(), 1);
    assert!(hits[0].text.contains("BETA"), "{hits:?}");
    // The old version's chunks are gone: one chunk record is left.
    let blobs = store
        .keys_with_prefix("rag:acme:default:chunks:")
        .await
        .expect("keys");
    assert_eq!(
        blobs,
        vec![format!("rag:acme:default:chunks:{}", outcome.version)]
    );
}

#[tokio::test]
async fn filters_accept_any_listed_value_and_combine_fields() {
    let rag = memory_rag();
    for (key, lang, product) in [
        ("en-router", "en", "router"),
        ("de-router", "de", "router"),
        ("fr-router", "fr", "router"),
        ("en-billing", "en", "billing"),
    ] {
        let mut d = doc(
            key,
            &format!("Help article about the {product} in language {lang}."),
        );
        d.filters = [
            ("lang".to_owned(), lang.to_owned()),
            ("product".to_owned(), product.to_owned()),
        ]
        .into();
        add(&rag, &acme(), d).await;
    }
    let check = |filters: &[(&str, &[&str])], expected: &[&str]| {
        let mut request = SearchRequest::text("help article");
        request.top_k = Some(10);
        for (name, values) in filters {
            request.filters.insert(
                (*name).to_owned(),
                values.iter().map(|v| (*v).to_owned()).collect(),
            );
        }
        let rag = rag.clone();
        let expected: Vec<String> = expected.iter().map(|e| (*e).to_owned()).collect();
        async move {
            let mut found = keys(&search(&rag, &acme(), request).await);
            found.sort();
            assert_eq!(found, expected);
        }
    };
    check(
        &[("lang", &["en", "de"])],
        &["de-router", "en-billing", "en-router"],
    )
    .await;
    check(
        &[("lang", &["en", "de"]), ("product", &["router"])],
        &["de-router", "en-router"],
    )
    .await;
    check(&[("lang", &["es"])], &[]).await;
    check(&[("color", &["red"])], &[]).await;
}

#[tokio::test]
async fn search_types_importance_and_chunk_context() {
    let rag = memory_rag();
    add(
        &rag,
        &acme(),
        doc(
            "codes",
            "Error XQ-4411 means the fan controller failed. Replace the fan.",
        ),
    )
    .await;
    add(
        &rag,
        &acme(),
        doc(
            "cooling",
            "Keep the device cool: dust blocks the fan and the vents.",
        ),
    )
    .await;
    add(
        &rag,
        &acme(),
        doc("colors", "The case comes in black, white and silver."),
    )
    .await;
    let run = |query: &str, kind: SearchType| {
        let mut request = SearchRequest::text(query);
        request.search_type = Some(kind);
        request.top_k = Some(3);
        let rag = rag.clone();
        async move { search(&rag, &acme(), request).await }
    };
    // Keyword search finds only exact words; vector search also ranks partial overlaps.
    let text = run("XQ-4411", SearchType::Text).await;
    assert_eq!(keys(&text), vec!["codes"]);
    assert!(text[0].vector_score.is_none() && text[0].text_score.is_some());
    let vector = run("fan controller", SearchType::Vector).await;
    assert_eq!(vector[0].key, "codes");
    assert!(vector.iter().all(|h| h.vector_score.is_some()));
    // Hybrid fuses both: a hit found by both rankings carries both scores and comes first.
    let hybrid = run("fan", SearchType::Hybrid).await;
    assert!(hybrid[0].vector_score.is_some() && hybrid[0].text_score.is_some());
    assert!(keys(&hybrid).contains(&"cooling".to_owned()));
    // The score threshold drops weak vector hits.
    let mut strict = SearchRequest::text("fan controller");
    strict.search_type = Some(SearchType::Vector);
    strict.vector_score_threshold = Some(0.99);
    assert!(search(&rag, &acme(), strict).await.is_empty());

    // Importance: two equal documents, the important one first.
    let ns = Some("imp".to_owned());
    for (key, importance) in [("low", 0.0), ("high", 1.0)] {
        let mut d = doc(key, "Same words in both documents about printers.");
        d.namespace = ns.clone();
        d.importance = Some(importance);
        add(&rag, &acme(), d).await;
    }
    let mut request = SearchRequest::text("printers");
    request.namespace = ns;
    request.search_type = Some(SearchType::Vector);
    assert_eq!(
        keys(&search(&rag, &acme(), request.clone()).await),
        vec!["high", "low"]
    );
    request.importance_weight = Some(0.0);
    let equal = search(&rag, &acme(), request).await;
    assert!((equal[0].score - equal[1].score).abs() < 1e-6);

    // chunk_context: the hit's text includes its neighbours.
    let body: Vec<String> = (0..12)
        .map(|i| format!("Paragraph {i} covers subject number{i} in detail, with enough other words to fill well over half of one chunk of two hundred characters."))
        .collect();
    let mut long = doc("manual", &body.join("\n\n"));
    long.namespace = Some("manual".to_owned());
    add(&rag, &acme(), long).await;
    let mut request = SearchRequest::text("number6");
    request.namespace = Some("manual".to_owned());
    request.search_type = Some(SearchType::Text);
    request.top_k = Some(1);
    let alone = search(&rag, &acme(), request.clone()).await;
    assert!(alone[0].text.contains("number6") && !alone[0].text.contains("number5"));
    request.chunk_context = 1;
    let around = search(&rag, &acme(), request).await;
    for n in ["number5", "number6", "number7"] {
        assert!(
            around[0].text.contains(n),
            "{n} missing: {}",
            around[0].text
        );
    }
    assert!(!around[0].text.contains("number4"));
}

#[tokio::test]
async fn a_namespace_keeps_its_dimension() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let small = Rag::new(store.clone(), settings(), Arc::new(LocalEmbedder::new(8)));
    let large = Rag::new(store, settings(), Arc::new(LocalEmbedder::new(16)));
    add(&small, &acme(), doc("a", "Eight dimensions.")).await;
    let err = large.add(&acme(), doc("b", "Sixteen dimensions.")).await;
    match err {
        Err(err @ RagError::DimensionMismatch { .. }) => {
            let message = err.to_string();
            assert!(
                message.contains("\"default\"") && message.contains('8') && message.contains("16"),
                "{message}"
            );
        }
        other => panic!("expected a dimension mismatch, got {other:?}"),
    }
    // Another namespace takes the other dimension.
    let mut other = doc("b", "Sixteen dimensions.");
    other.namespace = Some("wide".to_owned());
    add(&large, &acme(), other).await;
    // A query vector of the wrong size is refused too.
    let mut request = SearchRequest::text("");
    request.query = Query::Vector(vec![1.0; 16]);
    request.search_type = Some(SearchType::Vector);
    assert!(matches!(
        small.search(&acme(), request).await,
        Err(RagError::DimensionMismatch {
            expected: 8,
            actual: 16,
            ..
        })
    ));
}

#[tokio::test]
async fn delete_and_list_entries_and_namespaces() {
    let rag = memory_rag();
    for key in ["one", "two"] {
        add(
            &rag,
            &acme(),
            doc(key, &format!("Document {key} about kayaks.")),
        )
        .await;
    }
    let mut other = doc("three", "Another namespace about canoes.");
    other.namespace = Some("boats".to_owned());
    add(&rag, &acme(), other).await;
    let names: Vec<String> = rag
        .namespaces("acme")
        .await
        .expect("list")
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, vec!["boats", "default"]);
    let entries = rag.entries("acme", None).await.expect("entries");
    assert_eq!(
        entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        vec!["one", "two"]
    );

    assert!(rag.delete_entry("acme", None, "one").await.expect("delete"));
    assert!(!rag
        .delete_entry("acme", None, "one")
        .await
        .expect("delete again"));
    assert_eq!(
        keys(&search(&rag, &acme(), SearchRequest::text("kayaks")).await),
        vec!["two"]
    );
    assert_eq!(
        rag.delete_namespace("acme", "boats").await.expect("drop"),
        1
    );
    let mut request = SearchRequest::text("canoes");
    request.namespace = Some("boats".to_owned());
    assert!(search(&rag, &acme(), request).await.is_empty());
    assert_eq!(rag.namespaces("acme").await.expect("list").len(), 1);
    // Reserved namespaces are refused; names that could escape the group are invalid.
    let mut reserved = SearchRequest::text("x");
    reserved.namespace = Some("_mem-0".to_owned());
    assert!(matches!(
        rag.search(&acme(), reserved).await,
        Err(RagError::Forbidden { .. })
    ));
    let mut escape = doc("k", "text");
    escape.namespace = Some("other:default".to_owned());
    assert!(matches!(
        rag.add(&acme(), escape).await,
        Err(RagError::Invalid { .. })
    ));
}

// ---- Redis: persistence and two daemons ----------------------------------------------------

#[tokio::test]
async fn persists_on_redis_and_two_daemons_stay_in_sync() {
    let prefix = unique_prefix("rag-sync");
    let a = rag_on(redis::store(&prefix).await);
    let b = rag_on(redis::store(&prefix).await);
    add(
        &a,
        &acme(),
        doc("wifi", "Restart the router when the Wi-Fi drops."),
    )
    .await;
    assert_eq!(
        keys(&search(&b, &acme(), SearchRequest::text("wifi router")).await),
        vec!["wifi"]
    );
    // A replaces the entry: B's index reloads at its next search.
    add(
        &a,
        &acme(),
        doc("wifi", "Move the router away from the microwave oven."),
    )
    .await;
    let hits = search(&b, &acme(), SearchRequest::text("router")).await;
    assert!(hits[0].text.contains("microwave"), "{hits:?}");
    add(
        &b,
        &acme(),
        doc(
            "lan",
            "Plug the cable into a yellow LAN port of the router.",
        ),
    )
    .await;
    let mut found = keys(&search(&a, &acme(), SearchRequest::text("router")).await);
    found.sort();
    assert_eq!(found, vec!["lan", "wifi"]);
    // A third daemon started later loads everything from the store.
    let c = rag_on(redis::store(&prefix).await);
    assert_eq!(
        search(&c, &acme(), SearchRequest::text("router"))
            .await
            .len(),
        2
    );
    assert!(a.delete_entry("acme", None, "wifi").await.expect("delete"));
    assert_eq!(
        keys(&search(&b, &acme(), SearchRequest::text("router")).await),
        vec!["lan"]
    );
}

// ---- embeddings over HTTP --------------------------------------------------------------

#[tokio::test]
async fn embeddings_from_the_mock_server_record_usage() {
    let mock = llm::start(mock_config("")).await;
    let settings = llm::openai_settings(&mock);
    let model = troupe_agents::model::build("embedder", &settings).expect("model");
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let ledger = UsageLedger::new(store.clone(), BTreeMap::new());
    let prices = Prices {
        input_per_million: 2.0,
        output_per_million: 0.0,
    };
    let limiters = Limiters::new(&BTreeMap::new(), store.clone()).expect("limiters");
    let policies = Policies::new(store.clone(), ledger.clone(), limiters);
    let embedder = Arc::new(ModelEmbedder::new(model, prices, policies));
    let rag = Rag::new(store, settings_with_batch(2), embedder);
    let caller = Caller::new("acme", "ann", "indexer");
    let content = (0..6)
        .map(|i| format!("Paragraph {i} explains topic {i} of the router manual in a few words."))
        .collect::<Vec<_>>()
        .join("\n\n");
    let outcome = rag
        .add(&caller, doc("manual", &content))
        .await
        .expect("add");
    assert!(outcome.chunks >= 3, "{outcome:?}");
    let hits = search(
        &rag,
        &caller,
        SearchRequest::text("topic 4 of the router manual"),
    )
    .await;
    assert_eq!(hits[0].key, "manual");
    let stats = mock.stats();
    // Batches of two chunks, then one request for the query.
    assert_eq!(stats.embeddings as usize, outcome.chunks.div_ceil(2) + 1);
    assert!(stats.embedding_tokens > 0);
    let day = troupe_agents::usage::day_of(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64,
    );
    let report = ledger.report("acme", day, day).await.expect("report");
    assert_eq!(report.total.calls, stats.embeddings);
    assert_eq!(report.total.input_tokens, stats.embedding_tokens);
    assert!(report.total.cost > 0.0);
    assert_eq!(report.by_agent["indexer"].calls, stats.embeddings);
}

fn settings_with_batch(batch: usize) -> RagSettings {
    RagSettings {
        embed_batch: batch,
        chunk_size: 80,
        chunk_overlap: 0,
        max_chunk: 120,
        ..settings()
    }
}

// ---- group isolation -------------------------------------------------------------------

fn ctx(group: &str) -> ToolContext {
    ToolContext {
        group: group.to_owned(),
        user: "u".to_owned(),
        agent: "helper".to_owned(),
        thread: "t".to_owned(),
        message_id: "m".to_owned(),
    }
}

#[tokio::test]
async fn the_tool_searches_only_the_callers_group() {
    let rag = memory_rag();
    add(
        &rag,
        &Caller::new("alpha", "a", "cli"),
        doc("plan", "Alpha's launch plan: ship the kayak in May."),
    )
    .await;
    add(
        &rag,
        &Caller::new("beta", "b", "cli"),
        doc("secret", "Beta's zebra secret: the kayak price is 99."),
    )
    .await;
    let tool = RagSearchTool::new("kb", rag.clone(), &toml::Table::new()).expect("tool");
    let call = |group: &str, args: serde_json::Value| {
        let tool = &tool;
        let ctx = ctx(group);
        async move { tool.call(&ctx, args).await }
    };
    let out = call(
        "alpha",
        serde_json::json!({"query": "kayak zebra secret price"}),
    )
    .await
    .expect("search");
    assert!(out.content.contains("launch plan"), "{}", out.content);
    assert!(!out.content.contains("zebra"), "{}", out.content);
    let data = out.data.as_array().expect("hits");
    assert!(data.iter().all(|h| h["key"] == "plan"), "{data:?}");
    // Beta's own search finds its document, so the data is there to be found.
    let beta = call("beta", serde_json::json!({"query": "zebra secret"}))
        .await
        .expect("search");
    assert!(beta.content.contains("zebra secret"));
    // Naming another group, or a reserved namespace, is refused.
    for args in [
        serde_json::json!({"query": "zebra", "group": "beta"}),
        serde_json::json!({"query": "zebra", "namespace": "_mem-1"}),
    ] {
        assert!(matches!(
            call("alpha", args).await,
            Err(ToolError::Denied { .. })
        ));
    }
    let err = call(
        "alpha",
        serde_json::json!({"query": "zebra", "namespace": "beta:default"}),
    )
    .await;
    assert!(
        matches!(err, Err(ToolError::InvalidArguments { .. })),
        "{err:?}"
    );
    // Through a registry, only an agent whose allowlist names the tool can call it.
    let mut registry = ToolRegistry::new();
    registry
        .register(Arc::new(tool_clone(&rag)), Duration::from_secs(5), false)
        .expect("register");
    let allowed = vec!["kb".to_owned()];
    assert!(registry
        .call(&allowed, "kb", &ctx("alpha"), r#"{"query":"plan"}"#)
        .await
        .is_ok());
    assert!(matches!(
        registry
            .call(&[], "kb", &ctx("alpha"), r#"{"query":"plan"}"#)
            .await,
        Err(ToolError::Denied { .. })
    ));
}

fn tool_clone(rag: &Rag) -> RagSearchTool {
    RagSearchTool::new("kb", rag.clone(), &toml::Table::new()).expect("tool")
}

// ---- thread memory -----------------------------------------------------------------------

#[actix::test]
async fn an_agent_recalls_earlier_messages_of_its_thread() {
    let mock = llm::start(mock_config("")).await;
    let config = format!(
        r#"
[models.m]
provider = "openai"
base_url = "{}"
model = "mock-model"
max_retries = 0

[agents.helper]
model = "m"
context_messages = 2

[agents.helper.memory]
limit = 1
range = 1
"#,
        mock.base_url()
    );
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let rig = Rig::start(&config, store).await;
    let ask = |input: &str, thread: Option<String>| Ask {
        group: "acme".to_owned(),
        user: "ann".to_owned(),
        agent: "helper".to_owned(),
        thread,
        input: input.to_owned(),
        stream: false,
        ..Ask::default()
    };
    let first = rig
        .talk
        .ask(ask(
            "My dog is called Biscuit and he loves the beach.",
            None,
        ))
        .await
        .expect("turn");
    let thread = Some(first.thread.clone());
    for input in [
        "What is the capital of Peru?",
        "How tall is Mount Everest?",
        "Name a prime number.",
    ] {
        rig.talk
            .ask(ask(input, thread.clone()))
            .await
            .expect("turn");
    }
    rig.talk
        .ask(ask("What is my dog called?", thread))
        .await
        .expect("turn");
    let requests = mock.requests();
    let last = requests
        .iter()
        .rev()
        .find(|r| r.endpoint == "chat_completions")
        .expect("a chat request");
    let messages = last.body["messages"].as_array().expect("messages");
    let recalled: Vec<&str> = messages
        .iter()
        .filter(|m| m["role"] == "system")
        .filter_map(|m| m["content"].as_str())
        .filter(|c| c.contains("recalled from memory"))
        .collect();
    assert_eq!(recalled.len(), 1, "{messages:#?}");
    assert!(recalled[0].contains("Biscuit"), "{}", recalled[0]);
    // The recent context holds the last two messages and the new one; the dog only comes
    // back through memory.
    let users: Vec<&str> = messages
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(
        users,
        vec!["Name a prime number.", "What is my dog called?"]
    );
    assert_eq!(messages.len(), 1 + 3, "{messages:#?}");
    rig.stop().await;
}

// ---- the CLI and the support workflow ------------------------------------------------------

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Runs `troupe ARGS` on the Redis store with `prefix` (through `TROUPE_STORE__*`).
fn troupe(prefix: &str, args: &[&str]) -> Output {
    troupe_command(prefix, args).output().expect("run troupe")
}

fn troupe_command(prefix: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_troupe"));
    command
        .args(args)
        .env("TROUPE_STORE__BACKEND", "redis")
        .env("TROUPE_STORE__URL", redis_url())
        .env("TROUPE_STORE__PREFIX", prefix)
        .stdin(Stdio::null());
    command
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "troupe failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn knowledge_files() -> Vec<String> {
    ["router-wifi.md", "billing.md", "returns.md"]
        .iter()
        .map(|f| examples().join("knowledge").join(f).display().to_string())
        .collect()
}

#[test]
fn the_cli_adds_searches_lists_and_deletes_within_a_group() {
    let prefix = unique_prefix("rag-cli");
    let config = examples().join("support.toml").display().to_string();
    let mut args = vec![
        "rag",
        "add",
        "--group",
        "acme",
        "--filter",
        "team=support",
        "--config",
        &config,
    ];
    let files = knowledge_files();
    args.extend(files.iter().map(String::as_str));
    let added = stdout(&troupe(&prefix, &args));
    assert_eq!(
        added
            .lines()
            .filter(|l| l.starts_with("added default/"))
            .count(),
        3,
        "{added}"
    );
    // Adding the same files again changes nothing.
    let again = stdout(&troupe(&prefix, &args));
    assert_eq!(
        again
            .lines()
            .filter(|l| l.starts_with("unchanged "))
            .count(),
        3,
        "{again}"
    );

    let search = |group: &str, query: &str, extra: &[&str]| {
        let mut args = vec![
            "rag", "search", query, "--group", group, "--json", "--config", &config,
        ];
        args.extend_from_slice(extra);
        let out = stdout(&troupe(&prefix, &args));
        serde_json::from_str::<Vec<serde_json::Value>>(&out).expect("hits JSON")
    };
    let hits = search("acme", "router keeps dropping wifi", &[]);
    assert_eq!(hits[0]["key"], "router-wifi.md", "{hits:#?}");
    assert_eq!(hits[0]["title"], "Router drops Wi-Fi connections");
    let hits = search(
        "acme",
        "invoice payment",
        &["--type", "text", "--filter", "team=support"],
    );
    assert_eq!(hits[0]["key"], "billing.md");
    assert!(search("acme", "invoice payment", &["--filter", "team=sales"]).is_empty());
    // Another group sees nothing of acme's, and cannot delete it.
    assert!(search("intruder", "router keeps dropping wifi", &[]).is_empty());
    let denied = troupe(
        &prefix,
        &[
            "rag",
            "delete",
            "--group",
            "intruder",
            "--key",
            "billing.md",
            "--config",
            &config,
        ],
    );
    assert!(!denied.status.success());
    let list = stdout(&troupe(
        &prefix,
        &["rag", "list", "--group", "intruder", "--config", &config],
    ));
    assert!(list.trim().is_empty(), "{list}");
    let list = stdout(&troupe(
        &prefix,
        &[
            "rag",
            "list",
            "--group",
            "acme",
            "--namespace",
            "default",
            "--config",
            &config,
        ],
    ));
    assert_eq!(list.lines().count(), 3, "{list}");
    stdout(&troupe(
        &prefix,
        &[
            "rag",
            "delete",
            "--group",
            "acme",
            "--key",
            "billing.md",
            "--config",
            &config,
        ],
    ));
    assert!(search("acme", "invoice payment", &["--type", "text"]).is_empty());
    let namespaces = stdout(&troupe(
        &prefix,
        &["rag", "list", "--group", "acme", "--config", &config],
    ));
    assert!(namespaces.starts_with("default (2 entries"), "{namespaces}");
}

#[test]
fn the_support_workflow_answers_from_a_knowledge_base_added_with_the_cli() {
    let prefix = unique_prefix("rag-support");
    let config = examples().join("support.toml").display().to_string();
    let mut args = vec!["rag", "add", "--group", "acme", "--config", &config];
    let files = knowledge_files();
    args.extend(files.iter().map(String::as_str));
    stdout(&troupe(&prefix, &args));
    // A daemon on the same store runs the workflows.
    let mut daemon = troupe_command(&prefix, &["serve", "--config", &config])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the daemon");
    let run = |group: &str| {
        stdout(&troupe(
            &prefix,
            &[
                "workflow",
                "start",
                "support",
                "--group",
                group,
                "--input",
                "My router keeps dropping Wi-Fi",
                "--wait",
                "--timeout",
                "60s",
                "--config",
                &config,
            ],
        ))
    };
    let acme = run("acme");
    let intruder = run("intruder");
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(acme.contains("status completed"), "{acme}");
    let output = acme
        .split_once("output: ")
        .map(|(_, o)| o)
        .unwrap_or_default();
    assert!(output.contains("(final)"), "{output}");
    assert!(
        output.contains("Sources (knowledge base):\n[1] Router drops Wi-Fi connections (default/router-wifi.md)"),
        "{output}"
    );
    // The same workflow in another group finds none of acme's documents.
    assert!(intruder.contains("status completed"), "{intruder}");
    assert!(
        intruder.contains("Sources (knowledge base):\n(none)"),
        "{intruder}"
    );
    assert!(!intruder.contains("router-wifi.md"), "{intruder}");
}

#[tokio::test]
async fn the_approximate_index_answers_like_the_exact_one() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let exact = rag_on(store.clone());
    let settings = RagSettings {
        index: troupe_config::IndexKind::Auto,
        approximate_above: 5,
        ..settings()
    };
    let approximate = Rag::new(
        store,
        settings.clone(),
        Arc::new(LocalEmbedder::new(settings.dimensions)),
    );
    for i in 0..40 {
        let text = format!(
            "Note {i} is about the subject word{i} and the colour number {}.",
            i % 5
        );
        add(&exact, &acme(), doc(&format!("n{i}"), &text)).await;
    }
    // The graph is built in the background; meanwhile the exact index answers.
    eventually("no HNSW index", WAIT, || async {
        approximate.index_kind("acme", None).await.expect("kind") == "hnsw"
    })
    .await;
    assert_eq!(exact.index_kind("acme", None).await.expect("kind"), "exact");
    for query in ["subject word17", "word3 colour", "note 25"] {
        let mut request = SearchRequest::text(query);
        request.search_type = Some(SearchType::Vector);
        request.top_k = Some(3);
        let a = search(&exact, &acme(), request.clone()).await;
        let b = search(&approximate, &acme(), request).await;
        assert_eq!(a[0].key, b[0].key, "{query}: {a:?} vs {b:?}");
    }
}

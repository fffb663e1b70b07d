//! Validation of `[rag]` and `[agents.X.memory]`.

use super::Ctx;
use crate::defaults;
use crate::locate::KeyPath;
use crate::raw::{RawConfig, RawMemory, RawRag};
use crate::settings::{IndexKind, MemorySettings, RagSettings, SearchType};
use crate::suggest::closest;

pub(super) fn rag(ctx: &mut Ctx<'_>, raw: &RawRag, config: &RawConfig) -> RagSettings {
    let at = KeyPath::top("rag");
    let embedder = match raw.embedder.as_deref() {
        None => None,
        Some(name) if name == defaults::RAG_EMBEDDER => None,
        Some(name) => {
            if !config.models.contains_key(name) {
                let candidates = config
                    .models
                    .keys()
                    .map(String::as_str)
                    .chain([defaults::RAG_EMBEDDER]);
                ctx.report(
                    &at.key("embedder"),
                    format!("no model named \"{name}\" (use \"local\" or a [models.X] name)"),
                    closest(name, candidates),
                );
            }
            Some(name.to_owned())
        }
    };
    let chunk_size = ctx.positive(
        &at.key("chunk_size"),
        raw.chunk_size,
        defaults::RAG_CHUNK_SIZE,
    );
    let chunk_overlap = ctx.at_most(
        &at.key("chunk_overlap"),
        raw.chunk_overlap,
        defaults::RAG_CHUNK_OVERLAP,
        defaults::MAX_COUNT,
    );
    if chunk_overlap >= chunk_size {
        ctx.error(
            &at.key("chunk_overlap"),
            format!("must be smaller than chunk_size ({chunk_size})"),
        );
    }
    let max_chunk = ctx.at_most(
        &at.key("max_chunk"),
        raw.max_chunk,
        defaults::RAG_MAX_CHUNK.max(chunk_size),
        defaults::MAX_COUNT,
    );
    if max_chunk < chunk_size {
        ctx.error(
            &at.key("max_chunk"),
            format!("must be at least chunk_size ({chunk_size})"),
        );
    }
    let threshold = raw
        .vector_score_threshold
        .unwrap_or(defaults::RAG_VECTOR_SCORE_THRESHOLD);
    if !(-1.0..=1.0).contains(&threshold) {
        ctx.error(
            &at.key("vector_score_threshold"),
            "must be between -1 and 1 (a cosine similarity)",
        );
    }
    let search_type = ctx
        .choice(
            &at.key("search_type"),
            raw.search_type.as_deref(),
            SearchType::NAMES,
            Some(defaults::RAG_SEARCH_TYPE),
        )
        .and_then(SearchType::parse)
        .unwrap_or(SearchType::Hybrid);
    let index = match ctx.choice(
        &at.key("index"),
        raw.index.as_deref(),
        &["exact", "auto"],
        Some(defaults::RAG_INDEX),
    ) {
        Some("auto") => IndexKind::Auto,
        _ => IndexKind::Exact,
    };
    RagSettings {
        embedder,
        dimensions: ctx.positive_at_most(
            &at.key("dimensions"),
            raw.dimensions,
            defaults::RAG_DIMENSIONS,
            defaults::RAG_MAX_DIMENSIONS,
        ),
        chunk_size,
        chunk_overlap,
        max_chunk,
        embed_batch: ctx.positive(
            &at.key("embed_batch"),
            raw.embed_batch,
            defaults::RAG_EMBED_BATCH,
        ),
        embed_parallelism: ctx.positive(
            &at.key("embed_parallelism"),
            raw.embed_parallelism,
            defaults::RAG_EMBED_PARALLELISM,
        ),
        top_k: ctx.positive_at_most(
            &at.key("top_k"),
            raw.top_k,
            defaults::RAG_TOP_K,
            defaults::RAG_MAX_TOP_K,
        ),
        vector_score_threshold: threshold,
        search_type,
        vector_weight: weight(ctx, &at.key("vector_weight"), raw.vector_weight)
            .unwrap_or(defaults::RAG_VECTOR_WEIGHT),
        text_weight: weight(ctx, &at.key("text_weight"), raw.text_weight)
            .unwrap_or(defaults::RAG_TEXT_WEIGHT),
        index,
        approximate_above: ctx.positive(
            &at.key("approximate_above"),
            raw.approximate_above,
            defaults::RAG_APPROXIMATE_ABOVE,
        ),
        index_cache: ctx.positive(
            &at.key("index_cache"),
            raw.index_cache,
            defaults::RAG_INDEX_CACHE,
        ),
    }
}

/// A finite weight >= 0.
fn weight(ctx: &mut Ctx<'_>, at: &KeyPath, value: Option<f32>) -> Option<f32> {
    let value = value?;
    if !value.is_finite() || value < 0.0 {
        ctx.error(at, "must be a number >= 0");
    }
    Some(value)
}

pub(super) fn memory(ctx: &mut Ctx<'_>, at: &KeyPath, raw: &RawMemory) -> MemorySettings {
    let min_score = raw.min_score.unwrap_or(defaults::MEMORY_MIN_SCORE);
    if !(-1.0..=1.0).contains(&min_score) {
        ctx.error(&at.key("min_score"), "must be between -1 and 1");
    }
    MemorySettings {
        limit: ctx.positive_at_most(
            &at.key("limit"),
            raw.limit,
            defaults::MEMORY_LIMIT,
            defaults::MEMORY_MAX_LIMIT,
        ),
        range: ctx.at_most(
            &at.key("range"),
            raw.range,
            defaults::MEMORY_RANGE,
            defaults::MEMORY_MAX_RANGE,
        ),
        other_threads: raw.other_threads.unwrap_or(false),
        min_score,
    }
}

#[cfg(test)]
mod tests {
    use crate::{load_str, IndexKind, SearchType, StepKind};

    /// Loads `toml` as `bad.toml` and compares the diagnostics, one per line.
    fn check(toml: &str, expected: &[&str]) {
        let toml = toml.strip_prefix('\n').unwrap_or(toml);
        let got: Vec<String> = match load_str(toml, "bad.toml", &[]) {
            Ok(_) => Vec::new(),
            Err(err) => err.diagnostics().iter().map(ToString::to_string).collect(),
        };
        assert_eq!(got, expected, "\n--- input:\n{toml}");
    }

    #[test]
    fn rag_section_is_typed_with_defaults() {
        let config = match load_str(
            "[models.emb]\nprovider = \"scripted\"\n[rag]\nembedder = \"emb\"\nsearch_type = \"text\"\nindex = \"auto\"\n",
            "ok.toml",
            &[],
        ) {
            Ok(config) => config,
            Err(err) => panic!("{err}"),
        };
        let rag = &config.rag;
        assert_eq!(rag.embedder.as_deref(), Some("emb"));
        assert_eq!(rag.search_type, SearchType::Text);
        assert_eq!(rag.index, IndexKind::Auto);
        assert_eq!(
            (rag.chunk_size, rag.chunk_overlap, rag.max_chunk),
            (800, 100, 1200)
        );
        let local = match load_str("[rag]\nembedder = \"local\"\n", "ok.toml", &[]) {
            Ok(config) => config,
            Err(err) => panic!("{err}"),
        };
        assert_eq!(local.rag.embedder, None);
        assert_eq!(local.rag.index_cache, 256 * 1024 * 1024);
        let small = match load_str("[rag]\nindex_cache = 1048576\n", "ok.toml", &[]) {
            Ok(config) => config,
            Err(err) => panic!("{err}"),
        };
        assert_eq!(small.rag.index_cache, 1 << 20);
    }

    #[test]
    fn rag_errors_point_at_the_key() {
        check(
            r#"
[models.embed]
provider = "scripted"

[rag]
embedder = "embd"
chunk_size = 100
chunk_overlap = 100
max_chunk = 50
search_type = "hybird"
vector_weight = -1.0
vector_score_threshold = 2.0
index = "hnsw"
index_cache = 0
"#,
            &[
                r#"bad.toml:5:12: rag.embedder: no model named "embd" (use "local" or a [models.X] name) (did you mean "embed"?)"#,
                "bad.toml:7:17: rag.chunk_overlap: must be smaller than chunk_size (100)",
                "bad.toml:8:13: rag.max_chunk: must be at least chunk_size (100)",
                r#"bad.toml:9:15: rag.search_type: unknown value "hybird": expected one of "vector", "text", "hybrid" (did you mean "hybrid"?)"#,
                "bad.toml:10:17: rag.vector_weight: must be a number >= 0",
                "bad.toml:11:26: rag.vector_score_threshold: must be between -1 and 1 (a cosine similarity)",
                r#"bad.toml:12:9: rag.index: unknown value "hnsw": expected "exact" or "auto""#,
                "bad.toml:13:15: rag.index_cache: must be greater than 0",
            ],
        );
    }

    #[test]
    fn agent_memory_and_knowledge_steps() {
        check(
            r#"
[models.m]
provider = "scripted"

[agents.a]
model = "m"

[agents.a.memory]
limit = 0
min_score = 3.0

[[workflows.w.steps]]
name = "kb"
kind = "knowledge"
namespace = "a b"
top_k = 0

[[workflows.w.steps]]
name = "answer"
kind = "agent"
agent = "a"
top_k = 3
"#,
            &[
                "bad.toml:8:9: agents.a.memory.limit: must be greater than 0",
                "bad.toml:9:13: agents.a.memory.min_score: must be between -1 and 1",
                r#"bad.toml:14:13: workflows.w.steps[0].namespace: invalid name "a b": use only letters, digits, "_" and "-""#,
                "bad.toml:15:9: workflows.w.steps[0].top_k: must be greater than 0",
                r#"bad.toml:21:9: workflows.w.steps[1].top_k: only used with kind = "knowledge""#,
            ],
        );
        let config = match load_str(
            "[models.m]\nprovider = \"scripted\"\n[agents.a]\nmodel = \"m\"\n[agents.a.memory]\nother_threads = true\n[[workflows.w.steps]]\nname = \"kb\"\nkind = \"knowledge\"\n",
            "ok.toml",
            &[],
        ) {
            Ok(config) => config,
            Err(err) => panic!("{err}"),
        };
        let memory = config.agents["a"]
            .memory
            .clone()
            .unwrap_or_else(|| panic!("memory"));
        assert!(memory.other_threads);
        assert_eq!((memory.limit, memory.range), (3, 1));
        assert_eq!(
            config.workflows["w"].steps[0].kind,
            StepKind::Knowledge {
                namespace: None,
                top_k: None
            }
        );
    }
}

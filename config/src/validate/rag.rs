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
    let chunk_overlap = raw.chunk_overlap.unwrap_or(defaults::RAG_CHUNK_OVERLAP);
    if chunk_overlap >= chunk_size {
        ctx.error(
            &at.key("chunk_overlap"),
            format!("must be smaller than chunk_size ({chunk_size})"),
        );
    }
    let max_chunk = raw
        .max_chunk
        .unwrap_or(defaults::RAG_MAX_CHUNK.max(chunk_size));
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
        dimensions: ctx.positive(
            &at.key("dimensions"),
            raw.dimensions,
            defaults::RAG_DIMENSIONS,
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
        top_k: ctx.positive(&at.key("top_k"), raw.top_k, defaults::RAG_TOP_K),
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
        limit: ctx.positive(&at.key("limit"), raw.limit, defaults::MEMORY_LIMIT),
        range: raw.range.unwrap_or(defaults::MEMORY_RANGE),
        other_threads: raw.other_threads.unwrap_or(false),
        min_score,
    }
}

//! Summarize stage: the cheapest summary that will do.
//!
//! Tier policy ([`SummaryPolicy`], from configuration):
//! - fewer than `min_words` words: no summary (cost 0);
//! - up to `extractive_max_tokens` tokens (`auto`), or when `extractive` is asked for: a
//!   local extractive summary (sentences picked from the transcript, no model);
//! - longer transcripts (`auto`), or when `abstractive` is asked for: the cheap chat
//!   model; the strong model only when the job asks for it (`summary_model: strong`);
//! - when no chat model is configured (the key-free default), abstractive requests fall
//!   back to the extractive summary, and the usage says so (`provider: local`).
//!
//! Input sent to a model is limited to `token_budget` tokens: long transcripts keep
//! their start, their end and their highest-scoring sentences, in order.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use providers::{ChatChain, ChatMessage, ChatRequest, ChatTiers};
use serde::{Deserialize, Serialize};
use shared::cache::{key_hash, Cache, Counters};
use shared::domain::StageUsage;

use shared::domain::{Summary, SummaryKind};

pub use shared::config::SummaryPolicy;
pub use shared::domain::{ModelTier, SummaryMode};

/// What the policy decided for one transcript.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Too short: no summary.
    Skip,
    Extractive,
    /// Ask a chat model of this tier, with this (possibly trimmed) input.
    Abstractive {
        tier: ModelTier,
        input: String,
        input_tokens: usize,
    },
}

/// Version of the prompt below; part of the chat cache key.
pub const PROMPT_VERSION: &str = "summary-v1";

pub const SYSTEM_PROMPT: &str = "You summarise transcripts of voice messages. Answer with \
one to three plain sentences in the language of the transcript, keeping names, numbers, \
dates and requests. Do not add anything that is not in the transcript.";

/// Tokens of `text` (OpenAI's cl100k_base encoding, the common denominator of
/// OpenAI-compatible providers).
pub fn count_tokens(text: &str) -> usize {
    static BPE: OnceLock<Option<tiktoken_rs::CoreBPE>> = OnceLock::new();
    match BPE.get_or_init(|| tiktoken_rs::cl100k_base().ok()) {
        Some(bpe) => bpe.encode_with_special_tokens(text).len(),
        // The encoding is compiled into the binary; this is unreachable in practice.
        None => text.split_whitespace().count() * 4 / 3,
    }
}

/// The tier policy applied to one transcript.
pub fn plan(policy: &SummaryPolicy, text: &str, mode: SummaryMode, tier: ModelTier) -> Plan {
    let words = text.split_whitespace().count();
    if mode == SummaryMode::None || words == 0 {
        return Plan::Skip;
    }
    if mode == SummaryMode::Auto && words < policy.min_words {
        return Plan::Skip;
    }
    let tokens = count_tokens(text);
    let abstractive = match mode {
        SummaryMode::Extractive => false,
        SummaryMode::Abstractive => true,
        _ => tokens > policy.extractive_max_tokens,
    };
    if !abstractive {
        return Plan::Extractive;
    }
    let (input, input_tokens) = trim_to_budget(text, policy.token_budget);
    Plan::Abstractive {
        tier,
        input,
        input_tokens,
    }
}

/// A summary, or none, and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryOutcome {
    pub summary: Option<Summary>,
    pub usage: StageUsage,
}

/// What the chat cache stores for one summary.
#[derive(Debug, Serialize, Deserialize)]
struct CachedSummary {
    text: String,
    provider: String,
    model: String,
}

/// Runs the tier policy: local work where it will do, the cheap chat model where it is
/// needed, the strong one where asked for; chat results cached.
pub struct SummarizeStage {
    policy: SummaryPolicy,
    chat: ChatTiers,
    cache: Arc<dyn Cache>,
    cache_ttl: Duration,
    /// Chat-cache hits and misses in this process.
    pub cache_counters: Counters,
}

impl SummarizeStage {
    /// `chat`: the configured chat chains (default: none, local summaries only).
    pub fn new(
        policy: SummaryPolicy,
        chat: ChatTiers,
        cache: Arc<dyn Cache>,
        cache_ttl: Duration,
    ) -> Self {
        Self {
            policy,
            chat,
            cache,
            cache_ttl,
            cache_counters: Counters::default(),
        }
    }

    pub async fn run(&self, text: &str, mode: SummaryMode, tier: ModelTier) -> SummaryOutcome {
        let extractive_because = |note: String| StageUsage {
            note: Some(note),
            ..StageUsage::local("extractive")
        };
        let (summary, usage) = match plan(&self.policy, text, mode, tier) {
            Plan::Skip => (None, StageUsage::local("none")),
            Plan::Extractive => (extractive(text), StageUsage::local("extractive")),
            Plan::Abstractive { tier, input, .. } => match self.chat.chain(tier) {
                None => (
                    extractive(text),
                    extractive_because("no chat model configured".into()),
                ),
                Some(chain) => match self.abstractive(chain, &input).await {
                    Ok((summary, usage)) => (Some(summary), usage),
                    Err(reason) => {
                        tracing::warn!(%reason, "chat summary failed; using the extractive one");
                        (
                            extractive(text),
                            extractive_because(format!("chat failed: {reason}")),
                        )
                    }
                },
            },
        };
        SummaryOutcome { summary, usage }
    }

    async fn abstractive(
        &self,
        chain: &ChatChain,
        input: &str,
    ) -> Result<(Summary, StageUsage), String> {
        let models: Vec<String> = chain.models();
        let key = format!(
            "summary:{}",
            key_hash(&[
                models.join(",").as_bytes(),
                PROMPT_VERSION.as_bytes(),
                input.as_bytes()
            ])
        );
        if let Some(hit) = self
            .cache
            .get(&key)
            .await
            .and_then(|v| serde_json::from_str::<CachedSummary>(&v).ok())
        {
            self.cache_counters.hit();
            let usage = StageUsage {
                provider: hit.provider,
                model: hit.model,
                cached: true,
                ..StageUsage::default()
            };
            return Ok((
                Summary {
                    kind: SummaryKind::Abstractive,
                    text: hit.text,
                },
                usage,
            ));
        }
        self.cache_counters.miss();
        let request = ChatRequest {
            messages: vec![ChatMessage::system(SYSTEM_PROMPT), ChatMessage::user(input)],
            max_tokens: Some(self.policy.max_output_tokens),
            temperature: Some(0.2),
            ..ChatRequest::default()
        };
        let served = chain
            .complete(&request)
            .await
            .map_err(|e| e.code().to_string())?;
        let usage = served.usage();
        let text = served.value.content.trim().to_string();
        if text.is_empty() {
            return Err("empty answer".into());
        }
        let cached = CachedSummary {
            text: text.clone(),
            provider: usage.provider.clone(),
            model: usage.model.clone(),
        };
        if let Ok(v) = serde_json::to_string(&cached) {
            self.cache.set(&key, v, self.cache_ttl).await;
        }
        Ok((
            Summary {
                kind: SummaryKind::Abstractive,
                text,
            },
            usage,
        ))
    }
}

/// Splits text into sentences at `.`, `!` or `?` followed by white space.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let end_mark = matches!(b, b'.' | b'!' | b'?');
        let next_is_space = bytes.get(i + 1).is_none_or(|c| c.is_ascii_whitespace());
        if end_mark && next_is_space {
            let s = text[start..=i].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = i + 1;
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "had", "has", "have",
    "he", "her", "his", "i", "i'm", "if", "in", "is", "it", "it's", "its", "just", "me", "my",
    "of", "on", "or", "our", "so", "that", "the", "their", "them", "then", "there", "they", "this",
    "to", "up", "us", "was", "we", "were", "what", "when", "which", "will", "with", "you", "your",
    "hi", "hey", "okay", "ok", "um", "uh", "yeah", "so", "do", "don't", "can", "all", "about",
    "also", "get", "got", "know", "like", "not", "no", "yes", "be",
];

fn words_of(sentence: &str) -> impl Iterator<Item = String> + '_ {
    sentence
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// Scores sentences by the average document frequency of their content words, with a
/// small bonus for the opening sentence (voice messages usually lead with the point).
fn sentence_scores(sentences: &[&str]) -> Vec<f64> {
    let stop: HashSet<&str> = STOPWORDS.iter().copied().collect();
    let mut freq: HashMap<String, f64> = HashMap::new();
    for s in sentences {
        for w in words_of(s).filter(|w| !stop.contains(w.as_str())) {
            *freq.entry(w).or_default() += 1.0;
        }
    }
    let max = freq.values().copied().fold(1.0, f64::max);
    sentences
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let content: Vec<String> = words_of(s).filter(|w| !stop.contains(w.as_str())).collect();
            if content.is_empty() {
                return 0.0;
            }
            let mean = content.iter().map(|w| freq[w] / max).sum::<f64>() / content.len() as f64;
            // Longer sentences carry more; saturate so run-ons do not win by length.
            let length = (content.len() as f64 / 8.0).min(1.0);
            let lead = if i == 0 { 0.25 } else { 0.0 };
            mean * (0.5 + 0.5 * length) + lead
        })
        .collect()
}

/// The local extractive summary: the best quarter of the sentences (1 to 3), in their
/// original order.
pub fn extractive(text: &str) -> Option<Summary> {
    let sents = sentences(text);
    if sents.is_empty() {
        return None;
    }
    let keep = sents.len().div_ceil(4).clamp(1, 3);
    let scores = sentence_scores(&sents);
    let mut order: Vec<usize> = (0..sents.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut chosen: Vec<usize> = order.into_iter().take(keep).collect();
    chosen.sort_unstable();
    let text = chosen
        .iter()
        .map(|&i| sents[i])
        .collect::<Vec<_>>()
        .join(" ");
    Some(Summary {
        kind: SummaryKind::Extractive,
        text,
    })
}

/// Trims `text` to at most `budget` tokens, keeping the first and last sentences and
/// then the highest-scoring ones, in the original order. Returns the text and its size.
pub fn trim_to_budget(text: &str, budget: usize) -> (String, usize) {
    let total = count_tokens(text);
    if total <= budget {
        return (text.to_string(), total);
    }
    let sents = sentences(text);
    let costs: Vec<usize> = sents.iter().map(|s| count_tokens(s) + 1).collect();
    let scores = sentence_scores(&sents);
    let mut chosen = vec![false; sents.len()];
    let mut used = 0;
    // The start and the end first (a share of the budget each), then the best of the rest.
    let edge = budget / 4;
    let take = |i: usize, used: &mut usize, chosen: &mut Vec<bool>| {
        if !chosen[i] && *used + costs[i] <= budget {
            chosen[i] = true;
            *used += costs[i];
        }
    };
    let mut head = 0;
    for (i, &cost) in costs.iter().enumerate() {
        if head + cost > edge {
            break;
        }
        head += cost;
        take(i, &mut used, &mut chosen);
    }
    let mut tail = 0;
    for i in (0..sents.len()).rev() {
        if tail + costs[i] > edge {
            break;
        }
        tail += costs[i];
        take(i, &mut used, &mut chosen);
    }
    let mut order: Vec<usize> = (0..sents.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    for i in order {
        take(i, &mut used, &mut chosen);
    }
    if used == 0 {
        // A single sentence longer than the budget: cut it by tokens.
        let bpe = tiktoken_rs::cl100k_base().ok();
        if let Some(bpe) = bpe {
            let tokens = bpe.encode_with_special_tokens(text);
            let cut = &tokens[..budget.min(tokens.len())];
            let s = bpe.decode(cut).unwrap_or_default();
            let n = cut.len();
            return (s, n);
        }
    }
    let out: Vec<&str> = sents
        .iter()
        .zip(&chosen)
        .filter_map(|(s, &c)| c.then_some(*s))
        .collect();
    let out = out.join(" ");
    let n = count_tokens(&out);
    (out, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: &str = "Hi team, quick update on the website project. The designer sent over \
        the new home page this morning and overall it looks great. The menu still needs some \
        work on small screens. I spoke with the client and they want the launch moved to the \
        fourteenth of March. That gives us two extra weeks for testing. Please review the \
        designs before Thursday and send me your comments. Thanks everyone.";

    #[test]
    fn sentences_split_at_end_marks() {
        assert_eq!(
            sentences("One. Two! Three? four 3.5 percent"),
            ["One.", "Two!", "Three?", "four 3.5 percent"]
        );
    }

    #[test]
    fn policy_tiers() {
        let p = SummaryPolicy::default();
        assert_eq!(
            plan(&p, "Call me back.", SummaryMode::Auto, ModelTier::Cheap),
            Plan::Skip
        );
        assert_eq!(
            plan(&p, LONG, SummaryMode::None, ModelTier::Cheap),
            Plan::Skip
        );
        assert_eq!(
            plan(&p, LONG, SummaryMode::Auto, ModelTier::Cheap),
            Plan::Extractive
        );
        assert_eq!(
            plan(
                &p,
                "Call me back.",
                SummaryMode::Extractive,
                ModelTier::Cheap
            ),
            Plan::Extractive
        );
        match plan(&p, LONG, SummaryMode::Abstractive, ModelTier::Strong) {
            Plan::Abstractive { tier, input, .. } => {
                assert_eq!(tier, ModelTier::Strong);
                assert_eq!(input, LONG);
            }
            other => panic!("{other:?}"),
        }
        let long = LONG.repeat(10);
        assert!(matches!(
            plan(&p, &long, SummaryMode::Auto, ModelTier::Cheap),
            Plan::Abstractive {
                tier: ModelTier::Cheap,
                ..
            }
        ));
    }

    #[test]
    fn extractive_summary_keeps_the_point_in_order() {
        let s = extractive(LONG).expect("a summary");
        assert_eq!(s.kind, SummaryKind::Extractive);
        let picked = sentences(&s.text);
        assert_eq!(picked.len(), 2, "{}", s.text);
        assert!(s
            .text
            .starts_with("Hi team, quick update on the website project."));
        let positions: Vec<usize> = picked.iter().map(|p| LONG.find(p).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "original order");
        assert_eq!(extractive(LONG), extractive(LONG), "deterministic");
        assert!(extractive("   ").is_none());
    }

    #[test]
    fn trimming_respects_the_budget_and_keeps_both_ends() {
        let long: String = (0..200)
            .map(|i| format!("Sentence number {i} talks about topic {}.", i % 7))
            .collect::<Vec<_>>()
            .join(" ");
        let (out, n) = trim_to_budget(&long, 300);
        assert!(n <= 300, "{n}");
        assert_eq!(n, count_tokens(&out));
        assert!(out.starts_with("Sentence number 0 "));
        assert!(out.ends_with("Sentence number 199 talks about topic 3."));
        let (same, m) = trim_to_budget(LONG, 10_000);
        assert_eq!((same.as_str(), m), (LONG, count_tokens(LONG)));
    }

    #[test]
    fn tokens_are_counted_with_cl100k() {
        assert_eq!(count_tokens("hello world"), 2);
        assert_eq!(count_tokens(""), 0);
    }
}

//! Cost benchmark of the summary tier policy (issue 4).
//!
//!   bench/cost.sh   (or: make bench-cost; cargo run -p voxq-worker --example summary_cost)
//!
//! A cargo example rather than a `cargo bench` target: benches build with the `bench`
//! profile, which inherits from `release` and would build CTranslate2 a second time.
//!
//! The in-process stand-in for OpenAI-compatible APIs (`voxq-stub`, 127.0.0.1:0) serves
//! `gpt-4o-mini` (cheap) and `gpt-4o` (strong) on `/v1/chat/completions`. It checks each
//! request (no key, content type, known fields only, a served model, well-formed messages)
//! and answers in the documented wire format with a short extract of the transcript as the
//! summary; `usage.prompt_tokens` is counted with cl100k_base over the request's messages
//! (OpenAI's counting guide: 3 tokens per message plus its role and content, plus 3 to
//! prime the answer) and `completion_tokens` over the answer.
//!
//! A deterministic workload (fixed seed) of voice-message transcripts built from
//! `fixtures/voice/transcripts.tsv`: 60 % short (< 40 words: one to three of the short
//! fixture texts), 30 % medium (100–350 tokens: fixture texts joined), 10 % long
//! (1,000–5,000 tokens: many joined), with repeats (a quarter of the jobs re-send an
//! earlier transcript of the same kind, as when bots forward the same note).
//!
//! The workload goes through the real `SummarizeStage` (default `SummaryPolicy`), with
//! both chains configured (cheap and strong, through `chat_model()` and the price table
//! below), under two job options:
//! - tier policy: `summary: auto`, `summary_model: cheap`;
//! - always strong: `summary: abstractive`, `summary_model: strong` (every transcript to
//!   `gpt-4o`, trimmed to the same token budget).
//!
//! Each policy runs twice: with the chat cache (a `MemoryCache`, as in local mode) and with
//! none (a cache that never stores). The headline ratio compares both policies under the
//! same cache condition (with the cache); the other pairings are printed too. Costs are the
//! sum of the `cost_usd` the stage returns; they are checked against the stub's own count.
//!
//! Exits non-zero if the stub saw a malformed request, a chat call failed, or the costs
//! disagree with the stub's count.

use std::collections::{BTreeMap, HashSet};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use providers::{chat_model, BreakerConfig, ChatChain, ChatTiers, ProviderConfig};
use serde_json::Value;
use shared::cache::{Cache, MemoryCache};
use shared::domain::SummaryKind;
use stub::{Asked, Reply};
use voxq_worker::stage::summarize::{
    count_tokens, sentences, ModelTier, SummarizeStage, SummaryMode, SummaryPolicy,
};

// --- price table and workload ---------------------------------------------------------

/// OpenAI list prices, USD per million tokens (input, output).
const CHEAP: (&str, f64, f64) = ("gpt-4o-mini", 0.15, 0.60);
const STRONG: (&str, f64, f64) = ("gpt-4o", 2.50, 10.00);

const JOBS: usize = 500;
const SHARE_SHORT: usize = 60;
const SHARE_MEDIUM: usize = 30;
/// Chance (percent) that a job re-sends an earlier transcript of its kind.
const REPEAT_PERCENT: u64 = 25;
const SEED: u64 = 0x766f_7871_2d63_6f73;

const FIXTURES: &str = include_str!("../../fixtures/voice/transcripts.tsv");

/// splitmix64: a fixed generator, so the workload never changes with a crate version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Short,
    Medium,
    Long,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Short => "short",
            Kind::Medium => "medium",
            Kind::Long => "long",
        }
    }
}

struct Job {
    kind: Kind,
    text: Arc<str>,
    /// Re-sends an earlier job's transcript.
    repeat: bool,
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Fixture texts joined until `count_tokens` lands in `lo..=hi`.
fn joined(rng: &mut Rng, pool: &[(&str, usize)], lo: usize, hi: usize) -> String {
    loop {
        let target = rng.between(lo, hi);
        let mut parts: Vec<&str> = Vec::new();
        let mut estimate = 0;
        let mut last = usize::MAX;
        while estimate < target {
            let mut i = rng.below(pool.len());
            if i == last {
                i = (i + 1) % pool.len();
            }
            last = i;
            parts.push(pool[i].0);
            estimate += pool[i].1;
        }
        let text = parts.join(" ");
        if (lo..=hi).contains(&count_tokens(&text)) {
            return text;
        }
    }
}

fn fresh(rng: &mut Rng, kind: Kind, short: &[&str], all: &[(&str, usize)]) -> String {
    match kind {
        Kind::Short => loop {
            let n = rng.between(1, 3);
            let text = (0..n)
                .map(|_| short[rng.below(short.len())])
                .collect::<Vec<_>>()
                .join(" ");
            if words(&text) < 40 {
                return text;
            }
        },
        Kind::Medium => joined(rng, all, 100, 350),
        Kind::Long => joined(rng, all, 1_000, 5_000),
    }
}

fn workload() -> Vec<Job> {
    let all: Vec<(&str, usize)> = FIXTURES
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once('\t'))
        .map(|(_, text)| (text.trim(), count_tokens(text.trim())))
        .collect();
    assert!(
        all.len() >= 10,
        "fixtures/voice/transcripts.tsv is missing texts"
    );
    let short: Vec<&str> = all
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| words(t) < 20)
        .collect();

    let mut rng = Rng(SEED);
    let n_short = JOBS * SHARE_SHORT / 100;
    let n_medium = JOBS * SHARE_MEDIUM / 100;
    let mut kinds: Vec<Kind> = (0..JOBS)
        .map(|i| match i {
            i if i < n_short => Kind::Short,
            i if i < n_short + n_medium => Kind::Medium,
            _ => Kind::Long,
        })
        .collect();
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.below(i + 1));
    }

    let mut seen: HashSet<Arc<str>> = HashSet::new();
    let mut by_kind: BTreeMap<Kind, Vec<Arc<str>>> = BTreeMap::new();
    let mut jobs = Vec::with_capacity(JOBS);
    for kind in kinds {
        let earlier = by_kind.entry(kind).or_default();
        if !earlier.is_empty() && rng.next() % 100 < REPEAT_PERCENT {
            let text = earlier[rng.below(earlier.len())].clone();
            jobs.push(Job {
                kind,
                text,
                repeat: true,
            });
            continue;
        }
        let text: Arc<str> = (0..10_000)
            .map(|_| fresh(&mut rng, kind, &short, &all))
            .find(|t| !seen.contains(t.as_str()))
            .expect("the fixtures give enough distinct transcripts")
            .into();
        seen.insert(text.clone());
        earlier.push(text.clone());
        jobs.push(Job {
            kind,
            text,
            repeat: false,
        });
    }
    jobs
}

// --- the stand-in chat server ---------------------------------------------------------

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct ModelCount {
    calls: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
}

/// Per model, what the stand-in answered since the last `take()`.
type Counts = Arc<Mutex<BTreeMap<String, ModelCount>>>;

/// The shared stand-in (`voxq-stub`, which checks each request) serving both models,
/// answering with [`answer`].
struct Stub {
    server: stub::Stub,
    counts: Counts,
}

impl Stub {
    async fn start() -> Stub {
        let counts = Counts::default();
        let answering = counts.clone();
        let reply = Reply::with(move |asked| match asked {
            Asked::Chat(body) => answer(&answering, body),
            Asked::Transcription(_) => stub::error(404, "this benchmark only chats"),
        });
        let server = stub::Stub::start(&[CHEAP.0, STRONG.0], None, reply).await;
        Stub { server, counts }
    }

    fn take(&self) -> BTreeMap<String, ModelCount> {
        std::mem::take(&mut *self.counts.lock().unwrap())
    }
}

fn snapshot(model: &str) -> &'static str {
    match model {
        "gpt-4o-mini" => "gpt-4o-mini-2024-07-18",
        _ => "gpt-4o-2024-08-06",
    }
}

/// The stand-in's summary: the transcript's opening sentences, at most 60 words, cut to
/// the answer limit.
fn stub_summary(transcript: &str, max_tokens: Option<u64>) -> String {
    let mut picked: Vec<&str> = Vec::new();
    for sentence in sentences(transcript).into_iter().take(3) {
        picked.extend(sentence.split_whitespace());
        if picked.len() >= 40 {
            break;
        }
    }
    picked.truncate(60);
    let limit = max_tokens.map_or(usize::MAX, |n| n as usize);
    while !picked.is_empty() && count_tokens(&picked.join(" ")) > limit {
        picked.pop();
    }
    picked.join(" ")
}

/// A completion summarising the last user message, counted in `counts`.
fn answer(counts: &Counts, body: &Value) -> Reply {
    let model = body["model"].as_str().unwrap_or_default();
    let messages: Vec<(&str, &str)> = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or(""),
                m["content"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|key| body[key].as_u64());
    let prompt_tokens = 3 + messages
        .iter()
        .map(|(role, content)| 3 + count_tokens(role) + count_tokens(content))
        .sum::<usize>() as u64;
    let transcript = messages
        .iter()
        .rev()
        .find(|(role, _)| *role == "user")
        .map_or("", |(_, c)| *c);
    let answer = stub_summary(transcript, max_tokens);
    let completion_tokens = count_tokens(&answer) as u64;
    {
        let mut counts = counts.lock().unwrap();
        let c = counts.entry(model.to_string()).or_default();
        c.calls += 1;
        c.prompt_tokens += prompt_tokens;
        c.completion_tokens += completion_tokens;
    }
    stub::completion(snapshot(model), &answer, prompt_tokens, completion_tokens)
}

// --- the runs -------------------------------------------------------------------------

/// A cache that never stores: every lookup is a miss.
struct NoCache;

impl Cache for NoCache {
    fn get<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async { None })
    }
    fn set<'a>(&'a self, _key: &'a str, _value: String, _ttl: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

fn chain(stub: &Stub, (model, price_in, price_out): (&str, f64, f64)) -> ChatChain {
    let config = ProviderConfig {
        name: "openai".into(),
        base_url: stub.server.base_url(),
        api_key_env: None,
        model: model.into(),
        timeout_ms: 10_000,
        price_in_per_mtok: price_in,
        price_out_per_mtok: price_out,
        ..ProviderConfig::default()
    };
    let provider = chat_model(&config).expect("chat client");
    ChatChain::new(vec![provider], BreakerConfig::default())
}

#[derive(Default)]
struct Run {
    label: String,
    /// Ran with the chat cache (`MemoryCache`) rather than none.
    cached: bool,
    jobs: usize,
    tokens_in: u64,
    tokens_out: u64,
    cost_usd: f64,
    none: usize,
    extractive: usize,
    abstractive: usize,
    from_cache: usize,
    failed: Vec<String>,
    hits: u64,
    misses: u64,
    /// `SummarizeStage::cache_counters.hit_rate()`.
    hit_rate: f64,
    /// What the stub counted per model.
    served: BTreeMap<String, ModelCount>,
}

impl Run {
    /// The cost from the stub's own token counts and the price table.
    fn stub_cost(&self) -> f64 {
        [CHEAP, STRONG]
            .iter()
            .map(|(model, price_in, price_out)| {
                let c = self.served.get(*model).copied().unwrap_or_default();
                (c.prompt_tokens as f64 * price_in + c.completion_tokens as f64 * price_out) / 1e6
            })
            .sum()
    }

    fn calls(&self, model: &str) -> u64 {
        self.served.get(model).map_or(0, |c| c.calls)
    }
}

async fn run(
    label: &str,
    stub: &Stub,
    jobs: &[Job],
    cached: bool,
    mode: SummaryMode,
    tier: ModelTier,
) -> Run {
    let cache: Arc<dyn Cache> = if cached {
        Arc::new(MemoryCache::default())
    } else {
        Arc::new(NoCache)
    };
    let stage = SummarizeStage::new(
        SummaryPolicy::default(),
        ChatTiers::new(Some(chain(stub, CHEAP)), Some(chain(stub, STRONG))),
        cache,
        Duration::from_secs(3_600),
    );
    stub.take();
    let mut run = Run {
        label: label.into(),
        cached,
        jobs: jobs.len(),
        ..Run::default()
    };
    for job in jobs {
        let outcome = stage.run(&job.text, mode, tier).await;
        let usage = &outcome.usage;
        run.tokens_in += usage.tokens_in;
        run.tokens_out += usage.tokens_out;
        run.cost_usd += usage.cost_usd;
        run.from_cache += usize::from(usage.cached);
        if usage.model.contains("failed") || usage.model.contains("no chat model") {
            run.failed.push(usage.model.clone());
        }
        match outcome.summary.map(|s| s.kind) {
            None => run.none += 1,
            Some(SummaryKind::Extractive) => run.extractive += 1,
            Some(SummaryKind::Abstractive) => run.abstractive += 1,
        }
    }
    run.hits = stage.cache_counters.hits();
    run.misses = stage.cache_counters.misses();
    run.hit_rate = stage.cache_counters.hit_rate();
    run.served = stub.take();
    run
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole == 0.0 {
        0.0
    } else {
        100.0 * part / whole
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::NAN
    } else {
        a / b
    }
}

fn token_range(jobs: &[Job], kind: Kind) -> String {
    let mut t: Vec<usize> = jobs
        .iter()
        .filter(|j| j.kind == kind)
        .map(|j| count_tokens(&j.text))
        .collect();
    t.sort_unstable();
    let mut w: Vec<usize> = jobs
        .iter()
        .filter(|j| j.kind == kind)
        .map(|j| words(&j.text))
        .collect();
    w.sort_unstable();
    format!(
        "tokens {}–{} (median {}), words {}–{}",
        t[0],
        t[t.len() - 1],
        t[t.len() / 2],
        w[0],
        w[w.len() - 1]
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    let jobs = workload();
    let stub = Stub::start().await;
    let policy = SummaryPolicy::default();

    println!("voxq summary cost benchmark (issue 4): tier policy vs always-strong");
    println!(
        "price table, USD per million tokens in/out: {} {:.2}/{:.2}, {} {:.2}/{:.2}",
        CHEAP.0, CHEAP.1, CHEAP.2, STRONG.0, STRONG.1, STRONG.2
    );
    println!(
        "policy: SummaryPolicy::default() = min_words {}, extractive_max_tokens {}, \
         token_budget {}, max_output_tokens {}",
        policy.min_words,
        policy.extractive_max_tokens,
        policy.token_budget,
        policy.max_output_tokens
    );
    println!(
        "stub: in-process OpenAI-compatible /v1/chat/completions on 127.0.0.1 (ephemeral \
         port); usage counted with cl100k_base"
    );
    let distinct: HashSet<&str> = jobs.iter().map(|j| &*j.text).collect();
    let repeats = jobs.iter().filter(|j| j.repeat).count();
    println!(
        "workload: {} jobs (seed {SEED:#x}), {} distinct transcripts, {} repeated jobs ({:.1} %)",
        jobs.len(),
        distinct.len(),
        repeats,
        percent(repeats as f64, jobs.len() as f64)
    );
    for kind in [Kind::Short, Kind::Medium, Kind::Long] {
        let n = jobs.iter().filter(|j| j.kind == kind).count();
        let r = jobs.iter().filter(|j| j.kind == kind && j.repeat).count();
        println!(
            "  {:<6} {:>3} jobs ({:>2} repeats): {}",
            kind.name(),
            n,
            r,
            token_range(&jobs, kind)
        );
    }
    println!();

    let tier = (SummaryMode::Auto, ModelTier::Cheap);
    let strong = (SummaryMode::Abstractive, ModelTier::Strong);
    let mut runs = Vec::new();
    for (label, (mode, model_tier), cached) in [
        ("tier (auto, cheap)", tier, true),
        ("always-strong", strong, true),
        ("tier (auto, cheap)", tier, false),
        ("always-strong", strong, false),
    ] {
        runs.push(run(label, &stub, &jobs, cached, mode, model_tier).await);
    }

    println!(
        "{:<20} {:<6} {:>7} {:>6} {:>10} {:>10} {:>10} {:>11} {:>16} {:>13}",
        "policy",
        "cache",
        "4o-mini",
        "4o",
        "tokens in",
        "tokens out",
        "cost USD",
        "USD/1k jobs",
        "none/extr/abstr",
        "hits/lookups"
    );
    for r in &runs {
        println!(
            "{:<20} {:<6} {:>7} {:>6} {:>10} {:>10} {:>10.4} {:>11.4} {:>16} {:>13}",
            r.label,
            if r.cached { "memory" } else { "off" },
            r.calls(CHEAP.0),
            r.calls(STRONG.0),
            r.tokens_in,
            r.tokens_out,
            r.cost_usd,
            r.cost_usd * 1_000.0 / r.jobs as f64,
            format!("{}/{}/{}", r.none, r.extractive, r.abstractive),
            format!("{}/{}", r.hits, r.hits + r.misses),
        );
    }
    println!("(4o-mini, 4o: chat calls the stub answered per model; abstractive includes summaries served from the cache)");
    println!();

    let (tier_c, strong_c, tier_n, strong_n) = (&runs[0], &runs[1], &runs[2], &runs[3]);
    let headline = ratio(tier_c.cost_usd, strong_c.cost_usd);
    println!(
        "cost ratio tier / always-strong, both with the chat cache: {headline:.4} (goal <= 0.5: {})",
        if headline <= 0.5 { "met" } else { "NOT met" }
    );
    println!(
        "cost ratio tier / always-strong, neither cached:           {:.4}",
        ratio(tier_n.cost_usd, strong_n.cost_usd)
    );
    println!(
        "cost ratio tier with cache / always-strong without cache:   {:.4}",
        ratio(tier_c.cost_usd, strong_n.cost_usd)
    );
    println!(
        "chat cache hit rate on the workload with repeats: tier {}/{} = {:.1} %, \
         always-strong {}/{} = {:.1} %",
        tier_c.hits,
        tier_c.hits + tier_c.misses,
        100.0 * tier_c.hit_rate,
        strong_c.hits,
        strong_c.hits + strong_c.misses,
        100.0 * strong_c.hit_rate
    );
    println!(
        "cache savings: tier {:.4} -> {:.4} USD, always-strong {:.4} -> {:.4} USD",
        tier_n.cost_usd, tier_c.cost_usd, strong_n.cost_usd, strong_c.cost_usd
    );

    let mut ok = true;
    let violations = stub.server.violations();
    let requests = stub.server.hits();
    println!("stub: {requests} requests, {} malformed", violations.len());
    for v in violations.iter().take(10) {
        println!("  malformed: {v}");
    }
    ok &= violations.is_empty();
    for r in &runs {
        if !r.failed.is_empty() {
            ok = false;
            println!(
                "{} ({}): {} chat calls failed, e.g. {}",
                r.label,
                if r.cached { "cache" } else { "no cache" },
                r.failed.len(),
                r.failed[0]
            );
        }
        let stub_cost = r.stub_cost();
        if (stub_cost - r.cost_usd).abs() > 1e-9 {
            ok = false;
            println!(
                "{}: the stage's cost {:.6} USD differs from the stub's count {:.6} USD",
                r.label, r.cost_usd, stub_cost
            );
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

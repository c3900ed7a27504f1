//! Job options given on the command line, and the three ways the API takes them: query
//! parameters (JSONL batches), form fields (multipart batches) and JSON (`options`).

use serde::Serialize;

/// Options every item of a batch (or every reprocessed job) starts from.
#[derive(clap::Args, Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct JobOptionArgs {
    /// Model to transcribe with
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// ISO 639-1 language of the audio (detected when absent)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Tasks to run, comma-separated: transcribe, score, summarize
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<String>>,
    /// Summary kind: auto, none, extractive, abstractive
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Chat model tier of abstractive summaries: cheap, strong
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary_model: Option<String>,
    /// Rubric to score with: language_learner, support
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rubric: Option<String>,
}

impl JobOptionArgs {
    /// The options as name/value text pairs, the form of query parameters and multipart
    /// fields (`tasks` comma-separated). Fixed order, so requests are reproducible.
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        let mut push = |name, value: &Option<String>| {
            if let Some(value) = value {
                pairs.push((name, value.clone()));
            }
        };
        push("language", &self.language);
        push("summary", &self.summary);
        push("summary_model", &self.summary_model);
        push("rubric", &self.rubric);
        push("model", &self.model);
        if let Some(tasks) = &self.tasks {
            pairs.push(("tasks", tasks.join(",")));
        }
        pairs
    }

    /// The `options` object of a JSON request.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("options serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_given_options_are_sent() {
        let options = JobOptionArgs {
            model: Some("tiny.en".into()),
            tasks: Some(vec!["transcribe".into(), "score".into()]),
            ..Default::default()
        };
        assert_eq!(
            options.pairs(),
            vec![
                ("model", "tiny.en".to_string()),
                ("tasks", "transcribe,score".to_string())
            ]
        );
        assert_eq!(
            options.json(),
            serde_json::json!({"model": "tiny.en", "tasks": ["transcribe", "score"]})
        );
        assert!(JobOptionArgs::default().pairs().is_empty());
        assert_eq!(JobOptionArgs::default().json(), serde_json::json!({}));
    }
}

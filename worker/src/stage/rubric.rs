//! Rubric stage: the chat model scores a transcript against a named rubric, answering in
//! a strict JSON schema. Rubrics: `language_learner` (fluency, grammar, vocabulary 0–10
//! and short corrections) and `support` (urgency, sentiment, topic).

use providers::{ChatMessage, ChatRequest, ChatTiers, JsonSchema};
use serde_json::{json, Value};
use shared::domain::{ModelTier, Rubric, StageUsage};

/// The instructions and schema of a rubric. The match is exhaustive, so a rubric added to
/// [`Rubric`] does not compile until it has its prompt here.
pub fn prompt(rubric: Rubric) -> (&'static str, JsonSchema) {
    let score = json!({"type": "integer", "minimum": 0, "maximum": 10});
    match rubric {
        Rubric::LanguageLearner => (
            "You assess a language learner's spoken message from its transcript. Score \
             fluency, grammar and vocabulary from 0 to 10 and list at most five short \
             corrections (\"said X, say Y\"). Judge only what the transcript shows.",
            JsonSchema {
                name: rubric.as_str().into(),
                schema: json!({
                    "type": "object",
                    "properties": {
                        "fluency": score,
                        "grammar": score,
                        "vocabulary": score,
                        "corrections": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
                        "comment": {"type": "string"}
                    },
                    "required": ["fluency", "grammar", "vocabulary", "corrections", "comment"],
                    "additionalProperties": false
                }),
                strict: true,
            },
        ),
        Rubric::Support => (
            "You triage a customer's voice message to a support team from its transcript: \
             how urgent it is, the caller's sentiment, and the topic in a few words.",
            JsonSchema {
                name: rubric.as_str().into(),
                schema: json!({
                    "type": "object",
                    "properties": {
                        "urgency": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
                        "sentiment": {"type": "string", "enum": ["negative", "neutral", "positive"]},
                        "topic": {"type": "string"}
                    },
                    "required": ["urgency", "sentiment", "topic"],
                    "additionalProperties": false
                }),
                strict: true,
            },
        ),
    }
}

pub struct RubricStage {
    chat: ChatTiers,
}

impl RubricStage {
    pub fn new(chat: ChatTiers) -> Self {
        Self { chat }
    }

    /// The rubric's JSON answer and the usage; on failure a JSON
    /// `{"error": {"code", "message"}}` in its place (the transcript still stands).
    pub async fn run(&self, rubric: Rubric, text: &str, tier: ModelTier) -> (Value, StageUsage) {
        let name = rubric.as_str();
        let failed = |code: &str, message: String| {
            (
                json!({"name": name, "error": {"code": code, "message": message}}),
                StageUsage {
                    provider: "none".into(),
                    model: "none".into(),
                    ..StageUsage::default()
                },
            )
        };
        let Some(chain) = self.chat.chain(tier) else {
            return failed(
                "no-chat-model",
                "rubric scoring needs a chat model (configure chat_cheap)".into(),
            );
        };
        let (instructions, schema) = prompt(rubric);
        let request = ChatRequest {
            messages: vec![ChatMessage::system(instructions), ChatMessage::user(text)],
            schema: Some(schema),
            max_tokens: Some(400),
            temperature: Some(0.0),
        };
        match chain.complete(&request).await {
            Ok(served) => {
                let usage = served.usage();
                let mut answer = served.value.json.clone().unwrap_or(Value::Null);
                if let Some(obj) = answer.as_object_mut() {
                    obj.insert("name".into(), json!(name));
                }
                (answer, usage)
            }
            Err(e) => {
                // The provider's answer may quote its own body or host: log it, and give
                // the client the code with a fixed sentence.
                tracing::warn!(error = %e, "rubric scoring failed");
                failed(
                    e.code(),
                    "the chat model could not score this rubric".into(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rubrics_have_strict_schemas() {
        for name in Rubric::ALL {
            let (_, schema) = prompt(name);
            assert_eq!(schema.name, name.as_str());
            assert!(schema.strict);
            let props = schema.schema["properties"].as_object().unwrap();
            let required = schema.schema["required"].as_array().unwrap();
            assert_eq!(
                props.len(),
                required.len(),
                "{name}: strict mode needs all required"
            );
            assert_eq!(schema.schema["additionalProperties"], false);
        }
    }

    #[tokio::test]
    async fn without_a_chat_model_the_rubric_says_so() {
        let stage = RubricStage::new(ChatTiers::default());
        let (v, usage) = stage
            .run(Rubric::Support, "My order never arrived.", ModelTier::Cheap)
            .await;
        assert_eq!(v["name"], "support");
        assert_eq!(v["error"]["code"], "no-chat-model");
        assert_eq!(usage.cost_usd, 0.0);
    }
}

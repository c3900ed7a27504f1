//! Whisper's byte-level BPE vocabulary, read from a faster-whisper model directory.
//!
//! Ids and token strings come from CTranslate2's own vocabulary file (`vocabulary.txt`
//! or `vocabulary.json`), which is what the model's `generate` expects; BPE merges come
//! from `tokenizer.json`. Only what transcription needs is here: decoding text, finding
//! special tokens, and encoding the handful of symbols faster-whisper suppresses.

use std::collections::HashMap;
use std::path::Path;

use super::EngineError;

pub(crate) struct Tokenizer {
    id_to_token: Vec<String>,
    token_to_id: HashMap<String, usize>,
    merge_ranks: HashMap<(String, String), usize>,
    byte_encoder: [char; 256],
    byte_decoder: HashMap<char, u8>,
    pub(crate) eot: usize,
    pub(crate) sot: usize,
    pub(crate) sot_prev: usize,
    pub(crate) timestamp_begin: usize,
    pub(crate) no_speech: Option<usize>,
    pub(crate) transcribe: Option<usize>,
    pub(crate) translate: Option<usize>,
    pub(crate) sot_lm: Option<usize>,
}

impl Tokenizer {
    pub(crate) fn load(model_dir: &Path) -> Result<Self, EngineError> {
        let id_to_token = read_vocabulary(model_dir)?;
        let token_to_id: HashMap<String, usize> = id_to_token
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i))
            .collect();
        let merge_ranks = read_merges(&model_dir.join("tokenizer.json"))?;
        let byte_encoder = bytes_to_unicode();
        let byte_decoder = byte_encoder
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let find = |t: &str| token_to_id.get(t).copied();
        let need = |t: &str| {
            find(t).ok_or_else(|| EngineError::Model {
                detail: format!("vocabulary has no '{t}' token"),
            })
        };
        let no_timestamps = need("<|notimestamps|>")?;
        Ok(Self {
            eot: need("<|endoftext|>")?,
            sot: need("<|startoftranscript|>")?,
            sot_prev: need("<|startofprev|>")?,
            // Timestamp tokens follow <|notimestamps|> in every Whisper vocabulary.
            timestamp_begin: no_timestamps + 1,
            no_speech: find("<|nospeech|>").or_else(|| find("<|nocaptions|>")),
            transcribe: find("<|transcribe|>"),
            translate: find("<|translate|>"),
            sot_lm: find("<|startoflm|>"),
            id_to_token,
            token_to_id,
            merge_ranks,
            byte_encoder,
            byte_decoder,
        })
    }

    pub(crate) fn token(&self, id: usize) -> &str {
        self.id_to_token.get(id).map(String::as_str).unwrap_or("")
    }

    pub(crate) fn id(&self, token: &str) -> Option<usize> {
        self.token_to_id.get(token).copied()
    }

    /// The language token id for an ISO code such as `en`, if the model has it.
    pub(crate) fn language_token(&self, code: &str) -> Option<usize> {
        self.id(&format!("<|{code}|>"))
    }

    /// Text of the tokens below `<|endoftext|>`, as the HF byte-level decoder gives it.
    pub(crate) fn decode(&self, ids: &[usize]) -> String {
        let mut bytes = Vec::new();
        for &id in ids.iter().filter(|&&id| id < self.eot) {
            for c in self.token(id).chars() {
                match self.byte_decoder.get(&c) {
                    Some(&b) => bytes.push(b),
                    None => {
                        let mut buf = [0u8; 4];
                        bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// faster-whisper's `decode_with_timestamps`: the text between timestamp tokens
    /// decoded run by run, each timestamp written `<|1.24|>`.
    pub(crate) fn decode_with_timestamps(&self, ids: &[usize]) -> String {
        let mut out = String::new();
        let mut run_start = 0;
        for (i, &id) in ids.iter().enumerate() {
            if id >= self.timestamp_begin {
                out.push_str(&self.decode(&ids[run_start..i]));
                let seconds = (id - self.timestamp_begin) as f64 * 0.02;
                out.push_str(&format!("<|{seconds:.2}|>"));
                run_start = i + 1;
            }
        }
        out.push_str(&self.decode(&ids[run_start..]));
        out
    }

    /// BPE-encodes one pre-token (a run that GPT-2's pre-tokenizer keeps whole, such as
    /// `" <<"`). Returns `None` if a piece is missing from the vocabulary.
    pub(crate) fn encode_word(&self, word: &str) -> Option<Vec<usize>> {
        let mut parts: Vec<String> = word
            .bytes()
            .map(|b| self.byte_encoder[b as usize].to_string())
            .collect();
        loop {
            let best = parts
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| {
                    self.merge_ranks
                        .get(&(w[0].clone(), w[1].clone()))
                        .map(|&r| (r, i))
                })
                .min();
            let Some((_, i)) = best else { break };
            let merged = format!("{}{}", parts[i], parts[i + 1]);
            parts.splice(i..i + 2, [merged]);
        }
        parts.iter().map(|p| self.id(p)).collect()
    }

    /// faster-whisper's `non_speech_tokens`: symbols that mark speaker tags, music and
    /// sound effects, suppressed so they are never emitted.
    pub(crate) fn non_speech_tokens(&self) -> Vec<usize> {
        let mut symbols: Vec<String> = "\"#()*+/:;<=>@[\\]^_`{|}~「」『』"
            .chars()
            .map(String::from)
            .collect();
        symbols.extend(
            "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪"
                .split(' ')
                .map(String::from),
        );
        let miscellaneous: Vec<String> = "♩♪♫♬♭♮♯".chars().map(String::from).collect();
        let mut out = Vec::new();
        for lead in [" -", " '"] {
            if let Some(&first) = self.encode_word(lead).as_deref().and_then(|t| t.first()) {
                out.push(first);
            }
        }
        for (symbol, misc) in symbols
            .iter()
            .map(|s| (s, false))
            .chain(miscellaneous.iter().map(|s| (s, true)))
        {
            for text in [symbol.clone(), format!(" {symbol}")] {
                if let Some(tokens) = self.encode_word(&text) {
                    if tokens.len() == 1 || misc {
                        out.extend(tokens.first());
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The suppression list faster-whisper passes for its default `suppress_tokens=[-1]`.
    pub(crate) fn default_suppress_tokens(&self) -> Vec<i32> {
        let mut ids = self.non_speech_tokens();
        ids.extend([self.sot, self.sot_prev]);
        ids.extend(
            [self.transcribe, self.translate, self.sot_lm, self.no_speech]
                .into_iter()
                .flatten(),
        );
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().map(|i| i as i32).collect()
    }
}

fn read_vocabulary(model_dir: &Path) -> Result<Vec<String>, EngineError> {
    let txt = model_dir.join("vocabulary.txt");
    let json = model_dir.join("vocabulary.json");
    if txt.exists() {
        let text = std::fs::read_to_string(&txt).map_err(|e| EngineError::io(&txt, e))?;
        Ok(text.lines().map(String::from).collect())
    } else if json.exists() {
        let text = std::fs::read_to_string(&json).map_err(|e| EngineError::io(&json, e))?;
        serde_json::from_str(&text).map_err(|e| EngineError::Model {
            detail: format!("{} is not a JSON list of tokens: {e}", json.display()),
        })
    } else {
        Err(EngineError::Model {
            detail: format!(
                "no vocabulary.txt or vocabulary.json in {}",
                model_dir.display()
            ),
        })
    }
}

fn read_merges(path: &Path) -> Result<HashMap<(String, String), usize>, EngineError> {
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
    let bad = |detail: String| EngineError::Model { detail };
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("{} is not valid JSON: {e}", path.display())))?;
    let merges = value
        .pointer("/model/merges")
        .and_then(|m| m.as_array())
        .ok_or_else(|| bad(format!("{} has no model.merges", path.display())))?;
    let mut ranks = HashMap::with_capacity(merges.len());
    for (rank, merge) in merges.iter().enumerate() {
        // Older files store "a b", newer ones ["a", "b"].
        let pair = match merge {
            serde_json::Value::String(s) => s
                .split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string())),
            serde_json::Value::Array(a) if a.len() == 2 => match (a[0].as_str(), a[1].as_str()) {
                (Some(x), Some(y)) => Some((x.to_string(), y.to_string())),
                _ => None,
            },
            _ => None,
        };
        let pair = pair.ok_or_else(|| bad(format!("malformed merge at rank {rank}")))?;
        ranks.entry(pair).or_insert(rank);
    }
    Ok(ranks)
}

/// GPT-2's reversible map from bytes to printable characters.
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        table[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(256 + extra).unwrap_or('\u{FFFD}');
            extra += 1;
            c
        };
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real tiny.en model (`make test` fetches it).
    fn tiny_en() -> Tokenizer {
        let dir = std::env::var_os("VOXQ_MODEL_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/whisper-tiny.en")
            });
        Tokenizer::load(&dir).expect("tiny.en model is present (make model)")
    }

    #[test]
    fn suppression_list_equals_faster_whisper() {
        // faster_whisper.transcribe.get_suppressed_tokens(tokenizer, [-1]) for tiny.en.
        let want: Vec<i32> = vec![
            1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92, 93,
            357, 366, 438, 532, 685, 705, 796, 930, 1058, 1220, 1267, 1279, 1303, 1343, 1377, 1391,
            1635, 1782, 1875, 2162, 2361, 2488, 3467, 4008, 4211, 4600, 4808, 5299, 5855, 6329,
            7203, 9609, 9959, 10563, 10786, 11420, 11709, 11907, 13163, 13697, 13700, 14808, 15306,
            16410, 16791, 17992, 19203, 19510, 20724, 22305, 22935, 27007, 30109, 30420, 33409,
            34949, 40283, 40493, 40549, 47282, 49146, 50257, 50357, 50358, 50359, 50360, 50361,
        ];
        assert_eq!(tiny_en().default_suppress_tokens(), want);
    }

    #[test]
    fn special_tokens_and_decoding() {
        let t = tiny_en();
        assert_eq!(t.eot, 50256);
        assert_eq!(t.sot, 50257);
        assert_eq!(t.token(50362), "<|notimestamps|>");
        assert_eq!(t.timestamp_begin, 50363);
        assert_eq!(t.token(t.timestamp_begin), "<|0.00|>");
        assert_eq!(t.decode(&[18435, 11, 314]), " Hello, I");
        // Timestamps and specials are not text.
        assert_eq!(t.decode(&[50363, 18435, 50256, 50400]), " Hello");
        assert_eq!(t.encode_word(" Hello"), Some(vec![18435]));
    }

    #[test]
    fn timestamps_are_written_between_text_runs() {
        let t = tiny_en();
        let ids = [50363, 18435, 11, 50388, 314, 50256, 50413];
        assert_eq!(
            t.decode_with_timestamps(&ids),
            "<|0.00|> Hello,<|0.50|> I<|1.00|>"
        );
        // Without timestamps it is `decode`: <|endoftext|> is not text.
        assert_eq!(t.decode_with_timestamps(&[18435, 50256]), " Hello");
    }

    #[test]
    fn byte_table_is_a_bijection() {
        let t = bytes_to_unicode();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        let mut seen: Vec<char> = t.to_vec();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 256);
    }
}

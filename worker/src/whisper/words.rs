//! Word timestamps as faster-whisper 1.2.1 computes them (`word_timestamps=True`).
//!
//! CTranslate2's `align` does the heavy part: it runs the decoder over a window's text
//! and turns the cross-attention of the model's alignment heads into a token-to-frame
//! path (median filter, dynamic time warping). What faster-whisper does in Python on
//! top of that is ported here line for line: splitting tokens into words, reading word
//! start and end times off the path, clipping over-long words, merging punctuation into
//! its neighbours, and reconciling word and segment times.

use ct2rs::sys::WhisperAlignmentResult;

use super::decoding::Piece;
use super::tokenizer::Tokenizer;

/// Width of the median filter over the attention weights (faster-whisper's default).
pub(crate) const MEDIAN_FILTER_WIDTH: i64 = 7;
/// Encoder frames per second: the alignment path is in these.
const TOKENS_PER_SECOND: f64 = 50.0;
/// Mel frames per second: a window's `seek` is in these.
const FRAMES_PER_SECOND: f64 = 100.0;
/// Longest a word may be, whatever its neighbours (seconds).
const MAX_MEDIAN_DURATION: f64 = 0.7;
const SENTENCE_END_MARKS: &str = ".。!！?？";
/// Python's `string.punctuation`.
const ASCII_PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
/// Languages written without spaces between words: split wherever the text is whole
/// characters instead.
const UNSPACED_LANGUAGES: [&str; 6] = ["zh", "ja", "th", "lo", "my", "yue"];

/// One word of a window with its time relative to the window (after
/// [`add_word_timestamps`], absolute). `word` keeps its leading space, which the
/// punctuation rules read; it is trimmed only for output.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WordTiming {
    pub(crate) word: String,
    pub(crate) tokens: Vec<usize>,
    pub(crate) start: f64,
    pub(crate) end: f64,
    pub(crate) probability: f64,
}

impl WordTiming {
    /// The word as users see it.
    pub(crate) fn to_word(&self) -> shared::domain::Word {
        shared::domain::Word {
            word: self.word.trim().to_string(),
            start: self.start,
            end: self.end,
            probability: self.probability,
        }
    }
}

/// faster-whisper's `Tokenizer.split_to_word_tokens`: the words of `tokens` (which end
/// with `<|endoftext|>`) and the tokens of each.
pub(crate) fn split_to_word_tokens(
    tokenizer: &Tokenizer,
    language: &str,
    tokens: &[usize],
) -> (Vec<String>, Vec<Vec<usize>>) {
    let decode = |ids: &[usize]| tokenizer.decode_with_timestamps(ids);
    if UNSPACED_LANGUAGES.contains(&language) {
        split_on_unicode(tokens, decode)
    } else {
        split_on_spaces(tokens, tokenizer.eot, decode)
    }
}

/// `split_tokens_on_unicode`: a word ends wherever the tokens so far decode to whole
/// characters. A U+FFFD that is also in the decoding of all tokens is a real one (the
/// model wrote invalid UTF-8), not a character cut in half. Indices are in characters,
/// as Python's are.
fn split_on_unicode(
    tokens: &[usize],
    decode: impl Fn(&[usize]) -> String,
) -> (Vec<String>, Vec<Vec<usize>>) {
    const REPLACEMENT: char = '\u{FFFD}';
    let full: Vec<char> = decode(tokens).chars().collect();
    let mut words = Vec::new();
    let mut word_tokens = Vec::new();
    let mut current = Vec::new();
    let mut offset = 0;
    for &token in tokens {
        current.push(token);
        let decoded = decode(&current);
        let complete = match decoded.chars().position(|c| c == REPLACEMENT) {
            None => true,
            Some(i) => full.get(i + offset) == Some(&REPLACEMENT),
        };
        if complete {
            offset += decoded.chars().count();
            words.push(decoded);
            word_tokens.push(std::mem::take(&mut current));
        }
    }
    (words, word_tokens)
}

/// `split_tokens_on_spaces`: whole characters joined into words, a new word starting at
/// a leading space, at punctuation and at special tokens.
fn split_on_spaces(
    tokens: &[usize],
    eot: usize,
    decode: impl Fn(&[usize]) -> String,
) -> (Vec<String>, Vec<Vec<usize>>) {
    let (subwords, subword_tokens) = split_on_unicode(tokens, decode);
    let mut words: Vec<String> = Vec::new();
    let mut word_tokens: Vec<Vec<usize>> = Vec::new();
    for (subword, tokens) in subwords.into_iter().zip(subword_tokens) {
        let special = tokens.first().is_some_and(|&t| t >= eot);
        let with_space = subword.starts_with(' ');
        // `in string.punctuation` is a substring test: "" and "()" count.
        let punctuation = ASCII_PUNCTUATION.contains(py_strip(&subword));
        match (words.last_mut(), word_tokens.last_mut()) {
            (Some(word), Some(last)) if !(special || with_space || punctuation) => {
                word.push_str(&subword);
                last.extend(tokens);
            }
            _ => {
                words.push(subword);
                word_tokens.push(tokens);
            }
        }
    }
    (words, word_tokens)
}

/// Python's `str.strip()`: Unicode white space plus the four ASCII separators
/// (U+001C to U+001F) that Python also counts as space.
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// faster-whisper's `find_alignment` for one window: the words of `text_tokens` (the
/// window's text, timestamps removed) with times in seconds from the window's start
/// and the mean probability of their tokens. Empty when there is no text.
pub(crate) fn find_alignment(
    tokenizer: &Tokenizer,
    language: &str,
    text_tokens: &[usize],
    result: &WhisperAlignmentResult,
) -> Vec<WordTiming> {
    let mut tokens = text_tokens.to_vec();
    tokens.push(tokenizer.eot);
    let (words, word_tokens) = split_to_word_tokens(tokenizer, language, &tokens);
    let path: Vec<(i64, i64)> = result
        .alignments
        .iter()
        .map(|a| (a.token_x, a.frame_x))
        .collect();
    timings(words, word_tokens, &path, &result.text_token_probs)
}

/// Word times from the alignment path: a word starts at the frame where the path first
/// reaches its first token, and ends where the path first reaches the next word. The
/// last "word" (`<|endoftext|>`) only serves as the end of the one before.
fn timings(
    words: Vec<String>,
    word_tokens: Vec<Vec<usize>>,
    path: &[(i64, i64)],
    token_probs: &[f32],
) -> Vec<WordTiming> {
    if word_tokens.len() <= 1 {
        return Vec::new();
    }
    let mut boundaries = Vec::with_capacity(word_tokens.len());
    boundaries.push(0);
    for tokens in &word_tokens[..word_tokens.len() - 1] {
        boundaries.push(boundaries[boundaries.len() - 1] + tokens.len());
    }
    // The frame at which the path first reaches each token.
    let jump_times: Vec<f64> = path
        .iter()
        .enumerate()
        .filter(|&(i, &(token, _))| i == 0 || token != path[i - 1].0)
        .map(|(_, &(_, frame))| frame as f64 / TOKENS_PER_SECOND)
        .collect();
    let mut out = Vec::with_capacity(words.len());
    for ((word, tokens), bounds) in words
        .into_iter()
        .zip(word_tokens)
        .zip(boundaries.windows(2))
    {
        let (i, j) = (bounds[0], bounds[1]);
        let (Some(&start), Some(&end)) = (jump_times.get(i), jump_times.get(j)) else {
            break; // a path shorter than the text (faster-whisper would fail here)
        };
        let probs = token_probs.get(i..j).unwrap_or(&[]);
        let probability = if probs.is_empty() {
            0.0
        } else {
            probs.iter().map(|&p| f64::from(p)).sum::<f64>() / probs.len() as f64
        };
        out.push(WordTiming {
            word,
            tokens,
            start,
            end,
            probability,
        });
    }
    out
}

/// faster-whisper's `merge_punctuations`: opening punctuation (a word of its own with a
/// leading space, such as ` "`) joins the word after it, closing punctuation the word
/// before it. The emptied entry stays, with no text and no tokens; times are not moved.
pub(crate) fn merge_punctuations(alignment: &mut [WordTiming], prepended: &str, appended: &str) {
    let n = alignment.len();
    if n < 2 {
        return;
    }
    let mut j = n - 1;
    for i in (0..n - 1).rev() {
        let previous = &alignment[i];
        if previous.word.starts_with(' ') && prepended.contains(py_strip(&previous.word)) {
            let word = std::mem::take(&mut alignment[i].word);
            let mut tokens = std::mem::take(&mut alignment[i].tokens);
            let following = &mut alignment[j];
            following.word.insert_str(0, &word);
            tokens.append(&mut following.tokens);
            following.tokens = tokens;
        } else {
            j = i;
        }
    }
    let mut i = 0;
    for j in 1..n {
        // A substring test, as in Python: an emptied word ("") is "in" any string.
        if !alignment[i].word.ends_with(' ') && appended.contains(alignment[j].word.as_str()) {
            let word = std::mem::take(&mut alignment[j].word);
            let tokens = std::mem::take(&mut alignment[j].tokens);
            alignment[i].word.push_str(&word);
            alignment[i].tokens.extend(tokens);
        } else {
            i = j;
        }
    }
}

/// `np.median`: the middle value, or the mean of the two middle values.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Python's `round(x, 2)` for the values met here (multiples of 10 ms give or take a
/// rounding error, never halfway between two).
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// faster-whisper's `add_word_timestamps` for one window (`seek` in mel frames): clips
/// over-long words at sentence ends, merges punctuation, hands each sub-segment its
/// words (absolute times, rounded to 10 ms) and reconciles its start and end with them.
/// `last_speech_ts` is where speech last ended before this window.
pub(crate) fn add_word_timestamps(
    pieces: &mut [Piece],
    mut alignment: Vec<WordTiming>,
    seek: usize,
    eot: usize,
    mut last_speech_ts: f64,
    prepend_punctuations: &str,
    append_punctuations: &str,
) {
    let durations: Vec<f64> = alignment
        .iter()
        .map(|w| w.end - w.start)
        .filter(|&d| d != 0.0)
        .collect();
    let median_duration = if durations.is_empty() {
        0.0
    } else {
        median(&durations).min(MAX_MEDIAN_DURATION)
    };
    let max_duration = median_duration * 2.0;

    // A long word at a sentence boundary has soaked up the pause next to it.
    if !durations.is_empty() {
        for i in 1..alignment.len() {
            if alignment[i].end - alignment[i].start > max_duration {
                if SENTENCE_END_MARKS.contains(alignment[i].word.as_str()) {
                    alignment[i].end = alignment[i].start + max_duration;
                } else if SENTENCE_END_MARKS.contains(alignment[i - 1].word.as_str()) {
                    alignment[i].start = alignment[i].end - max_duration;
                }
            }
        }
    }
    merge_punctuations(&mut alignment, prepend_punctuations, append_punctuations);

    let time_offset = seek as f64 / FRAMES_PER_SECOND;
    let mut word_index = 0;
    for piece in pieces.iter_mut() {
        let text_tokens = piece.tokens.iter().filter(|&&t| t < eot).count();
        let mut saved_tokens = 0;
        let mut words: Vec<WordTiming> = Vec::new();
        while word_index < alignment.len() && saved_tokens < text_tokens {
            let timing = &alignment[word_index];
            if !timing.word.is_empty() {
                words.push(WordTiming {
                    start: round2(time_offset + timing.start),
                    end: round2(time_offset + timing.end),
                    ..timing.clone()
                });
            }
            saved_tokens += timing.tokens.len();
            word_index += 1;
        }
        if let Some(last) = reconcile(
            piece,
            &mut words,
            last_speech_ts,
            median_duration,
            max_duration,
        ) {
            last_speech_ts = last;
        }
        piece.words = words;
    }
}

/// The per-sub-segment rules of `add_word_timestamps`: the first words after a pause
/// are shortened, and the segment's and the words' edges are made to agree. Returns
/// the segment's end, where speech last ended, if it has words.
fn reconcile(
    piece: &mut Piece,
    words: &mut [WordTiming],
    last_speech_ts: f64,
    median_duration: f64,
    max_duration: f64,
) -> Option<f64> {
    let n = words.len();
    if n == 0 {
        return None;
    }
    // The first and second word after a pause are no longer than twice the median.
    if words[0].end - last_speech_ts > median_duration * 4.0
        && (words[0].end - words[0].start > max_duration
            || (n > 1 && words[1].end - words[0].start > max_duration * 2.0))
    {
        if n > 1 && words[1].end - words[1].start > max_duration {
            let boundary = (words[1].end / 2.0).max(words[1].end - max_duration);
            words[0].end = boundary;
            words[1].start = boundary;
        }
        words[0].start = (words[0].end - max_duration).max(0.0);
    }
    // Prefer the segment's start if the first word is too long.
    if piece.start < words[0].end && piece.start - 0.5 > words[0].start {
        words[0].start = (words[0].end - median_duration).min(piece.start).max(0.0);
    } else {
        piece.start = words[0].start;
    }
    // Prefer the segment's end if the last word is too long.
    let last = &mut words[n - 1];
    if piece.end > last.start && piece.end + 0.5 < last.end {
        last.end = (last.start + median_duration).max(piece.end);
    } else {
        piece.end = last.end;
    }
    Some(piece.end)
}

/// faster-whisper's `get_end`: the end of the window's last word, or of its last
/// sub-segment if no word was found.
pub(crate) fn last_end(pieces: &[Piece]) -> Option<f64> {
    pieces
        .iter()
        .rev()
        .flat_map(|p| p.words.iter().rev())
        .map(|w| w.end)
        .next()
        .or_else(|| pieces.last().map(|p| p.end))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREPEND: &str = "\"'“¿([{-";
    const APPEND: &str = "\"'.。,，!！?？:：”)]}、";

    fn timing(word: &str, tokens: &[usize], start: f64, end: f64) -> WordTiming {
        WordTiming {
            word: word.to_string(),
            tokens: tokens.to_vec(),
            start,
            end,
            probability: 0.5,
        }
    }

    fn words_of(alignment: &[WordTiming]) -> Vec<(&str, &[usize])> {
        alignment
            .iter()
            .map(|w| (w.word.as_str(), w.tokens.as_slice()))
            .collect()
    }

    /// A decoder for a made-up vocabulary: each token is a list of UTF-8 bytes, decoded
    /// lossily as a byte-level BPE tokenizer decodes them.
    fn byte_decoder<'a>(vocab: &'a [&'static [u8]]) -> impl Fn(&[usize]) -> String + 'a {
        move |ids: &[usize]| {
            let bytes: Vec<u8> = ids
                .iter()
                .filter_map(|&id| vocab.get(id))
                .flat_map(|b| b.iter().copied())
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }

    #[test]
    fn merge_moves_opening_and_closing_punctuation() {
        // faster_whisper.transcribe.merge_punctuations on the same list gives this.
        let mut a = vec![
            timing(" \"", &[1], 0.0, 0.1),
            timing(" Hello", &[2], 0.1, 0.5),
            timing(",", &[3], 0.5, 0.6),
            timing(" (", &[4], 0.6, 0.7),
            timing(" world", &[5], 0.7, 1.0),
            timing(")", &[6], 1.0, 1.1),
            timing(".", &[7], 1.1, 1.2),
        ];
        merge_punctuations(&mut a, PREPEND, APPEND);
        assert_eq!(
            words_of(&a),
            vec![
                ("", &[][..]),
                (" \" Hello,", &[1, 2, 3][..]),
                ("", &[][..]),
                ("", &[][..]),
                (" ( world).", &[4, 5, 6, 7][..]),
                ("", &[][..]),
                ("", &[][..]),
            ]
        );
        // Times are not touched: the merged word keeps the following word's start.
        assert_eq!((a[1].start, a[1].end), (0.1, 0.5));
        assert_eq!((a[4].start, a[4].end), (0.7, 1.0));
    }

    #[test]
    fn merge_treats_the_empty_word_as_punctuation() {
        // "" is a substring of every string, as `"" in appended` is True in Python: an
        // emptied word after a word is "appended" to it (a no-op), and a word after an
        // emptied one is appended to the empty one when it is itself punctuation.
        let mut a = vec![
            timing(" Hi", &[1], 0.0, 0.2),
            timing("", &[], 0.2, 0.2),
            timing("!", &[2], 0.2, 0.3),
        ];
        merge_punctuations(&mut a, PREPEND, APPEND);
        assert_eq!(
            words_of(&a),
            vec![(" Hi!", &[1, 2][..]), ("", &[][..]), ("", &[][..])]
        );

        // A word ending in a space keeps what follows; a lone space with a leading
        // space strips to "" and so moves into the next word.
        let mut b = vec![
            timing(" a ", &[1], 0.0, 0.1),
            timing(".", &[2], 0.1, 0.2),
            timing(" ", &[3], 0.2, 0.3),
            timing(" b", &[4], 0.3, 0.4),
        ];
        merge_punctuations(&mut b, PREPEND, APPEND);
        assert_eq!(
            words_of(&b),
            vec![
                (" a ", &[1][..]),
                (".", &[2][..]),
                ("", &[][..]),
                ("  b", &[3, 4][..])
            ]
        );

        // A single word, or none, is left alone.
        let mut one = vec![timing("\"", &[1], 0.0, 0.1)];
        merge_punctuations(&mut one, PREPEND, APPEND);
        assert_eq!(words_of(&one), vec![("\"", &[1][..])]);
        merge_punctuations(&mut [], PREPEND, APPEND);
    }

    #[test]
    fn median_averages_the_two_middle_values_of_an_even_count() {
        assert_eq!(median(&[0.4, 0.1, 0.3, 0.2]), 0.25);
        assert_eq!(median(&[0.3, 0.1, 0.2]), 0.2);
        assert_eq!(median(&[0.06, 0.02]), (0.02 + 0.06) / 2.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn unicode_split_waits_for_whole_characters() {
        // "你" is E4 BD A0 and "好" E5 A5 BD; each is cut across two tokens, as GPT-2's
        // byte-level vocabulary cuts them.
        let vocab: [&[u8]; 6] = [b" ", b"\xe4\xbd", b"\xa0", b"\xe5\xa5", b"\xbd", b""];
        let decode = byte_decoder(&vocab);
        let (words, tokens) = split_on_unicode(&[0, 1, 2, 3, 4, 5], &decode);
        assert_eq!(words, vec![" ", "你", "好", ""]);
        assert_eq!(tokens, vec![vec![0], vec![1, 2], vec![3, 4], vec![5]]);
        // Joined on spaces, the characters after " " belong to its word.
        let (words, tokens) = split_on_spaces(&[0, 1, 2, 3, 4, 5], 5, &decode);
        assert_eq!(words, vec![" 你好", ""]);
        assert_eq!(tokens, vec![vec![0, 1, 2, 3, 4], vec![5]]);
    }

    #[test]
    fn unicode_split_keeps_a_real_replacement_character() {
        // A lone continuation byte is invalid in the whole text too: it is a word of
        // its own ("\u{FFFD}") rather than the start of one that never completes.
        let vocab: [&[u8]; 4] = [b" a", b"\xa0", b"b", b""];
        let decode = byte_decoder(&vocab);
        let (words, tokens) = split_on_unicode(&[0, 1, 2, 3], &decode);
        assert_eq!(words, vec![" a", "\u{FFFD}", "b", ""]);
        assert_eq!(tokens, vec![vec![0], vec![1], vec![2], vec![3]]);
    }

    /// The real tiny.en vocabulary (`make model`), as tokenizer.rs's tests load it.
    fn tiny_en() -> Tokenizer {
        let dir = std::env::var_os("VOXQ_MODEL_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/whisper-tiny.en")
            });
        Tokenizer::load(&dir).expect("tiny.en model is present (make model)")
    }

    #[test]
    fn split_matches_faster_whisper_on_real_tokens() {
        let t = tiny_en();
        // tokenizer.split_to_word_tokens(ids + [eot]) in faster-whisper 1.2.1, where
        // ids = hf.encode(' 你好 日本').ids and hf.encode(' Hello, "world" (it\'s) nice-ish.').ids.
        let cjk = [
            220, 19526, 254, 25001, 121, 10545, 245, 98, 17312, 105, 50256,
        ];
        let (words, tokens) = split_to_word_tokens(&t, "zh", &cjk);
        assert_eq!(words, vec![" ", "你", "好", " 日", "本", ""]);
        assert_eq!(
            tokens,
            vec![
                vec![220],
                vec![19526, 254],
                vec![25001, 121],
                vec![10545, 245, 98],
                vec![17312, 105],
                vec![50256]
            ]
        );
        let (words, _) = split_to_word_tokens(&t, "en", &cjk);
        assert_eq!(words, vec![" 你好", " 日本", ""]);

        let latin = [
            18435, 11, 366, 6894, 1, 357, 270, 338, 8, 3621, 12, 680, 13, 50256,
        ];
        let (words, tokens) = split_to_word_tokens(&t, "en", &latin);
        assert_eq!(
            words,
            vec![" Hello", ",", " \"world", "\"", " (it's", ")", " nice", "-ish", ".", ""]
        );
        assert_eq!(tokens[4], vec![357, 270, 338]);
        assert_eq!(tokens[7], vec![12, 680]);
    }

    #[test]
    fn jumps_in_the_path_give_word_boundaries() {
        // Text tokens [a, b, c] + eot in words [" ab" = a b][" c" = c][eot]. The path
        // (token, frame) stays on a token over several frames; a word starts at the
        // first frame of its first token and ends at the first frame of the next word.
        let path = [
            (0, 0),
            (0, 1),
            (1, 2),
            (1, 3),
            (1, 4),
            (2, 5),
            (2, 6),
            (3, 7),
            (3, 8),
        ];
        let words = vec![" ab".to_string(), " c".to_string(), String::new()];
        let tokens = vec![vec![10, 11], vec![12], vec![99]];
        let got = timings(words, tokens, &path, &[0.5, 0.25, 1.0]);
        assert_eq!(
            got.len(),
            2,
            "the end-of-text word only closes the last word"
        );
        assert_eq!(got[0].word, " ab");
        assert_eq!((got[0].start, got[0].end), (0.0, 5.0 / 50.0));
        assert_eq!(got[0].probability, 0.375);
        assert_eq!((got[1].start, got[1].end), (5.0 / 50.0, 7.0 / 50.0));
        assert_eq!(got[1].probability, 1.0);
        // Only the end-of-text word: nothing to time.
        assert!(timings(vec![String::new()], vec![vec![99]], &path, &[]).is_empty());
        // A path that stops early gives the words it covers.
        assert_eq!(
            timings(
                vec![" a".into(), " b".into(), String::new()],
                vec![vec![1], vec![2], vec![99]],
                &path[..3],
                &[0.5, 0.5],
            )
            .len(),
            1
        );
    }

    fn piece(start: f64, end: f64, tokens: &[usize]) -> Piece {
        Piece {
            start,
            end,
            tokens: tokens.to_vec(),
            words: Vec::new(),
        }
    }

    /// A piece as the tests compare it: start, end and its (word, start, end).
    type Placed = (f64, f64, Vec<(String, f64, f64)>);

    /// Runs `add_word_timestamps` and returns each piece's (start, end, words).
    fn place(
        alignment: Vec<WordTiming>,
        mut pieces: Vec<Piece>,
        seek: usize,
        last_speech_ts: f64,
    ) -> Vec<Placed> {
        add_word_timestamps(
            &mut pieces,
            alignment,
            seek,
            EOT,
            last_speech_ts,
            PREPEND,
            APPEND,
        );
        pieces
            .into_iter()
            .map(|p| {
                let words = p
                    .words
                    .iter()
                    .map(|w| (w.word.clone(), w.start, w.end))
                    .collect();
                (p.start, p.end, words)
            })
            .collect()
    }

    fn expect(start: f64, end: f64, words: &[(&str, f64, f64)]) -> Placed {
        let words = words
            .iter()
            .map(|&(w, s, e)| (w.to_string(), s, e))
            .collect();
        (start, end, words)
    }

    /// Token ids at and above this are special (timestamps), as `eot` is in Whisper.
    const EOT: usize = 100;

    // The expected values of the next three tests are faster-whisper 1.2.1's
    // WhisperModel.add_word_timestamps on the same input (with find_alignment replaced
    // by one returning `alignment`).

    #[test]
    fn sentence_ends_clip_long_words_and_a_pause_shortens_the_first_word() {
        // Median duration 0.15 s: " Next" (1.6 s, after ".") starts 0.3 s before its
        // end; " Well" (1.6 s, after 8 s of silence) is cut to 0.3 s. Punctuation is
        // merged, the second piece's end moves to its last word's.
        let alignment = vec![
            timing(" Well", &[1], 0.0, 1.6),
            timing(",", &[2], 1.6, 1.7),
            timing(" then", &[3], 1.7, 1.9),
            timing(".", &[4], 1.9, 2.0),
            timing(" Next", &[5], 2.0, 3.6),
            timing(" one", &[6], 3.6, 3.8),
            timing(" \"", &[7], 3.8, 3.9),
            timing(" q", &[8], 3.9, 4.0),
        ];
        let pieces = vec![
            piece(10.0, 12.0, &[150, 1, 2, 3, 4, 151]),
            piece(12.0, 14.5, &[151, 5, 6, 7, 8, EOT]),
        ];
        let got = place(alignment, pieces, 1000, 2.0);
        assert_eq!(
            got,
            vec![
                expect(
                    11.3,
                    11.9,
                    &[(" Well,", 11.3, 11.6), (" then.", 11.7, 11.9)]
                ),
                expect(
                    13.3,
                    14.0,
                    &[
                        (" Next", 13.3, 13.6),
                        (" one", 13.6, 13.8),
                        (" \" q", 13.9, 14.0)
                    ]
                ),
            ]
        );
    }

    #[test]
    fn segment_edges_win_over_words_that_run_past_them() {
        // No pause (speech ended 0.5 s before); the first word starts 0.8 s before the
        // segment and the last ends 1.3 s after it: both are pulled in (median 0.6 s).
        let alignment = vec![
            timing(" So", &[1], 0.0, 1.0),
            timing(" we", &[2], 1.0, 1.2),
            timing(" go", &[3], 1.2, 1.4),
            timing(" end", &[4], 1.4, 2.9),
        ];
        let pieces = vec![piece(10.8, 11.6, &[190, 1, 2, 3, 4, 200])];
        assert_eq!(
            place(alignment, pieces, 1000, 10.5),
            vec![expect(
                10.8,
                11.6,
                &[
                    (" So", 10.4, 11.0),
                    (" we", 11.0, 11.2),
                    (" go", 11.2, 11.4),
                    (" end", 11.4, 12.0)
                ]
            )]
        );
    }

    #[test]
    fn after_a_pause_a_long_second_word_moves_the_first_boundary() {
        let alignment = vec![
            timing(" A", &[1], 0.0, 0.1),
            timing(" B", &[2], 0.1, 1.9),
            timing(" C", &[3], 1.9, 2.0),
            timing(" D", &[4], 2.0, 2.1),
        ];
        let pieces = vec![piece(5.0, 7.2, &[110, 1, 2, 3, 4, 200])];
        assert_eq!(
            place(alignment, pieces, 500, 0.0),
            vec![expect(
                6.5,
                7.1,
                &[
                    (" A", 6.5, 6.7),
                    (" B", 6.7, 6.9),
                    (" C", 6.9, 7.0),
                    (" D", 7.0, 7.1)
                ]
            )]
        );
    }

    #[test]
    fn last_end_falls_back_to_the_last_sub_segment() {
        let mut pieces = vec![piece(0.0, 1.0, &[1]), piece(1.0, 2.5, &[2])];
        assert_eq!(last_end(&pieces), Some(2.5));
        pieces[0].words = vec![timing(" a", &[1], 0.1, 0.9)];
        assert_eq!(last_end(&pieces), Some(0.9));
        assert_eq!(last_end(&[]), None);
    }
}

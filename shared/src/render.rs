//! One transcript as a file to read or download: plain text, SubRip (SRT), WebVTT or
//! JSON. `voxq-worker transcribe` (local mode) and the API's
//! `GET /v1/jobs/{id}/transcript` both render with these functions, so each format has
//! one implementation and the two print the same bytes for the same transcript. Pure
//! string building: no I/O.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::domain::Transcript;

/// A file format of one transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The whole text and a final newline.
    Text,
    /// SubRip: numbered cues, `HH:MM:SS,mmm` times.
    Srt,
    /// WebVTT: a `WEBVTT` header, `HH:MM:SS.mmm` times.
    Vtt,
    /// The transcript as JSON: `text`, `language`, `duration_s`, `segments`.
    Json,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Text, Format::Srt, Format::Vtt, Format::Json];

    /// The name a request uses, which is also the file extension.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "txt",
            Format::Srt => "srt",
            Format::Vtt => "vtt",
            Format::Json => "json",
        }
    }

    /// The media type (`Content-Type`) of a rendered file.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; charset=utf-8",
            Format::Srt => "application/x-subrip; charset=utf-8",
            Format::Vtt => "text/vtt; charset=utf-8",
            Format::Json => "application/json",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Format::ALL.iter().map(|f| f.as_str()).collect();
                format!(
                    "unknown format '{}'; use one of {}",
                    s.chars().take(64).collect::<String>(),
                    names.join(", ")
                )
            })
    }
}

/// What one subtitle cue holds: a segment (the default) or a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    #[default]
    Segment,
    /// One cue per word, for segments that have word times (`word_timestamps`); a
    /// segment without them stays one cue.
    Word,
}

/// `t` in `format`, one cue per segment.
pub fn render(t: &Transcript, format: Format) -> String {
    render_as(t, format, Granularity::Segment)
}

/// `t` in `format`; subtitles have one cue per `granularity` (text and JSON ignore it).
pub fn render_as(t: &Transcript, format: Format, granularity: Granularity) -> String {
    match format {
        Format::Text => text(t),
        Format::Srt => srt_as(t, granularity),
        Format::Vtt => vtt_as(t, granularity),
        Format::Json => json(t),
    }
}

/// The whole text as the model spaced it, and a final newline.
pub fn text(t: &Transcript) -> String {
    format!("{}\n", t.text)
}

/// One cue: start, end and text.
type Cue<'a> = (f64, f64, &'a str);

fn cues(t: &Transcript, granularity: Granularity) -> Vec<Cue<'_>> {
    let mut out = Vec::new();
    for seg in &t.segments {
        match (&seg.words, granularity) {
            (Some(words), Granularity::Word) if !words.is_empty() => {
                out.extend(words.iter().map(|w| (w.start, w.end, w.word.as_str())))
            }
            _ => out.push((seg.start, seg.end, seg.text.as_str())),
        }
    }
    out
}

/// SubRip: one numbered cue per segment, each followed by a blank line.
pub fn srt(t: &Transcript) -> String {
    srt_as(t, Granularity::Segment)
}

/// SubRip with one cue per `granularity`.
pub fn srt_as(t: &Transcript, granularity: Granularity) -> String {
    let mut s = String::new();
    for (i, (start, end, text)) in cues(t, granularity).into_iter().enumerate() {
        // `write!` to a String cannot fail.
        let _ = write!(
            s,
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            timestamp(start, ','),
            timestamp(end, ','),
            // A line holding `-->` would read as the timing line of a new cue.
            one_line(text).replace("-->", "-- >")
        );
    }
    s
}

/// WebVTT: the `WEBVTT` header, then one cue per segment, each followed by a blank line.
pub fn vtt(t: &Transcript) -> String {
    vtt_as(t, Granularity::Segment)
}

/// WebVTT with one cue per `granularity`.
pub fn vtt_as(t: &Transcript, granularity: Granularity) -> String {
    let mut s = String::from("WEBVTT\n\n");
    for (start, end, text) in cues(t, granularity) {
        let _ = write!(
            s,
            "{} --> {}\n{}\n\n",
            timestamp(start, '.'),
            timestamp(end, '.'),
            vtt_escape(&one_line(text))
        );
    }
    s
}

/// The transcript as pretty-printed JSON and a final newline: the `text`, `language`,
/// `duration_s` and `segments` a job's `result` carries.
pub fn json(t: &Transcript) -> String {
    // Strings, numbers (serde_json writes non-finite ones as null) and a list:
    // serialising a `Transcript` cannot fail.
    let mut s = serde_json::to_string_pretty(t).unwrap_or_default();
    s.push('\n');
    s
}

/// `HH:MM:SS<sep>mmm`, rounded to the millisecond; hours grow past two digits, negative
/// and NaN times are 0.
pub fn timestamp(t: f64, sep: char) -> String {
    let ms = (t.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// A segment's text as one cue line: a blank line would end the cue early, so line
/// breaks (and the white space around them) become one space and blank lines go.
/// Text without line breaks is returned as it is.
fn one_line(text: &str) -> String {
    if !text.contains(['\n', '\r']) {
        return text.to_string();
    }
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// WebVTT cue text: `&` and `<` start entities and tags, and `-->` may not occur, so all
/// three characters are written as character references.
fn vtt_escape(text: &str) -> String {
    if !text.contains(['&', '<', '>']) {
        return text.to_string();
    }
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Segment;

    fn segment(start: f64, end: f64, text: &str) -> Segment {
        Segment {
            start,
            end,
            text: text.into(),
            avg_logprob: -0.2,
            no_speech_prob: 0.01,
            words: None,
        }
    }

    fn transcript(segments: Vec<Segment>) -> Transcript {
        let text = segments
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        Transcript {
            text,
            language: "en".into(),
            language_probability: None,
            duration_s: segments.last().map_or(0.0, |s| s.end),
            segments,
        }
    }

    fn two() -> Transcript {
        transcript(vec![
            segment(0.0, 1.5, "Hello there."),
            segment(1.5, 3661.25, "Bye."),
        ])
    }

    #[test]
    fn srt_numbers_cues_and_uses_commas() {
        assert_eq!(
            srt(&two()),
            "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n\
             2\n00:00:01,500 --> 01:01:01,250\nBye.\n\n"
        );
    }

    #[test]
    fn vtt_has_a_header_and_dots() {
        assert_eq!(
            vtt(&two()),
            "WEBVTT\n\n\
             00:00:00.000 --> 00:00:01.500\nHello there.\n\n\
             00:00:01.500 --> 01:01:01.250\nBye.\n\n"
        );
    }

    #[test]
    fn text_is_the_whole_text_and_a_newline() {
        assert_eq!(text(&two()), "Hello there. Bye.\n");
    }

    #[test]
    fn json_is_the_transcript() {
        let t = two();
        let s = json(&t);
        assert!(s.ends_with("}\n"));
        let back: Transcript = serde_json::from_str(&s).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn timestamps_round_to_the_nearest_millisecond_and_carry() {
        assert_eq!(timestamp(1.2344, ','), "00:00:01,234");
        assert_eq!(timestamp(1.2346, ','), "00:00:01,235");
        assert_eq!(timestamp(59.9996, '.'), "00:01:00.000");
        assert_eq!(timestamp(3599.9996, '.'), "01:00:00.000");
        assert_eq!(timestamp(0.0004, ','), "00:00:00,000");
        assert_eq!(timestamp(-0.5, ','), "00:00:00,000");
        assert_eq!(timestamp(f64::NAN, ','), "00:00:00,000");
    }

    #[test]
    fn hours_past_one_and_past_ninety_nine() {
        assert_eq!(
            timestamp(2.0 * 3600.0 + 3.0 * 60.0 + 4.005, ','),
            "02:03:04,005"
        );
        assert_eq!(timestamp(100.0 * 3600.0 + 0.25, '.'), "100:00:00.250");
    }

    #[test]
    fn an_empty_transcript_has_no_cues() {
        let t = Transcript::empty("en", 3.0);
        assert_eq!(srt(&t), "");
        assert_eq!(vtt(&t), "WEBVTT\n\n");
        assert_eq!(text(&t), "\n");
        assert_eq!(render(&t, Format::Json), json(&t));
    }

    #[test]
    fn line_breaks_and_arrows_inside_a_segment_keep_the_cue_format() {
        let t = transcript(vec![
            segment(0.0, 1.0, "first line\n\n  second line\r\nthird"),
            segment(1.0, 2.0, "a --> b <i>&"),
        ]);
        assert_eq!(
            srt(&t),
            "1\n00:00:00,000 --> 00:00:01,000\nfirst line second line third\n\n\
             2\n00:00:01,000 --> 00:00:02,000\na -- > b <i>&\n\n"
        );
        assert_eq!(
            vtt(&t),
            "WEBVTT\n\n\
             00:00:00.000 --> 00:00:01.000\nfirst line second line third\n\n\
             00:00:01.000 --> 00:00:02.000\na --&gt; b &lt;i&gt;&amp;\n\n"
        );
        // Every cue is exactly: [number,] timing line, one text line.
        for (rendered, header) in [(srt(&t), 0), (vtt(&t), 1)] {
            let blocks: Vec<_> = rendered.trim_end().split("\n\n").skip(header).collect();
            assert_eq!(blocks.len(), 2, "{rendered}");
            for b in blocks {
                assert_eq!(b.lines().filter(|l| l.contains("-->")).count(), 1, "{b}");
            }
        }
    }

    #[test]
    fn formats_parse_by_name() {
        for f in Format::ALL {
            assert_eq!(f.as_str().parse::<Format>(), Ok(f));
        }
        let e = "doc".parse::<Format>().unwrap_err();
        assert!(
            e.contains("'doc'") && e.contains("txt, srt, vtt, json"),
            "{e}"
        );
        assert_eq!(Format::Vtt.media_type(), "text/vtt; charset=utf-8");
    }

    #[test]
    fn word_granularity_gives_one_cue_per_word_and_keeps_segments_without_words() {
        use crate::domain::Word;
        let word = |w: &str, start: f64, end: f64| Word {
            word: w.into(),
            start,
            end,
            probability: 0.9,
        };
        let mut t = two();
        t.segments[0].words = Some(vec![word("Hello", 0.0, 0.52), word("<there.>", 0.6, 1.5)]);
        assert_eq!(
            srt_as(&t, Granularity::Word),
            "1\n00:00:00,000 --> 00:00:00,520\nHello\n\n\
             2\n00:00:00,600 --> 00:00:01,500\n<there.>\n\n\
             3\n00:00:01,500 --> 01:01:01,250\nBye.\n\n"
        );
        assert_eq!(
            vtt_as(&t, Granularity::Word),
            "WEBVTT\n\n00:00:00.000 --> 00:00:00.520\nHello\n\n\
             00:00:00.600 --> 00:00:01.500\n&lt;there.&gt;\n\n\
             00:00:01.500 --> 01:01:01.250\nBye.\n\n"
        );
        // Segment cues are unchanged by words being present.
        assert_eq!(srt(&t), srt(&two()));
        assert_eq!(render_as(&t, Format::Json, Granularity::Word), json(&t));
        assert!(json(&t).contains("\"probability\": 0.9"));
    }
}

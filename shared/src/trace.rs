//! W3C trace context (`traceparent: 00-<trace id>-<span id>-<flags>`): a request's
//! trace id travels with the job it creates, so the worker's spans for that job carry
//! the same `trace_id` as the API span that created it, and logs (JSON with
//! `VOXQ_LOG_FORMAT=json`) can be joined on it.

use rand::RngCore;

/// One span's place in a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// This span's id: 16 lower-case hex digits.
    pub span_id: String,
    /// The caller's span, when the trace came from a `traceparent`.
    pub parent_id: Option<String>,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The trace and parent span ids of a valid `traceparent` (version 00 or later,
/// neither id all zeros).
pub fn parse(header: &str) -> Option<(String, String)> {
    let mut parts = header.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex_of = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = hex_of(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex_of(trace, 32)
        && hex_of(parent, 16)
        && hex_of(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    valid.then(|| (trace.to_string(), parent.to_string()))
}

impl TraceContext {
    /// A new span continuing the trace of `traceparent` if it is valid, else starting one.
    pub fn continue_from(traceparent: Option<&str>) -> Self {
        match traceparent.and_then(parse) {
            Some((trace_id, parent)) => Self {
                trace_id,
                span_id: random_hex(8),
                parent_id: Some(parent),
            },
            None => Self {
                trace_id: random_hex(16),
                span_id: random_hex(8),
                parent_id: None,
            },
        }
    }

    /// This span as a `traceparent` (sampled).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_headers_continue_the_trace_and_invalid_ones_start_one() {
        let h = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceContext::continue_from(Some(h));
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(t.span_id, "00f067aa0ba902b7");
        assert_eq!(parse(&t.traceparent()).unwrap().0, t.trace_id);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
            let t = TraceContext::continue_from(Some(bad));
            assert!(t.parent_id.is_none() && t.trace_id.len() == 32);
        }
    }
}

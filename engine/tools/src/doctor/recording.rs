//! Recordings: the snapshots of a window in one text file, so a diagnosis can be
//! replayed (`candela doctor --replay FILE`) and tests can feed recorded series.
//!
//! Format: a header line, then per snapshot a marker comment with its Unix time
//! followed by the exposition text as scraped. Markers are comments, so every
//! chunk is itself valid exposition text.
//!
//! ```text
//! # candela doctor recording v1
//! # snapshot t=1732350000.000
//! # TYPE vllm:num_requests_running gauge
//! vllm:num_requests_running{engine="0",model_name="smol"} 3.0
//! # snapshot t=1732350005.000
//! ...
//! ```

use super::expo::{self, Exposition, Sample};
use super::names;
use super::series::{Series, Snapshot};

pub const HEADER: &str = "# candela doctor recording v1";
const MARKER: &str = "# snapshot t=";

/// Keeps the lines of an exposition that doctor reads (its families' samples
/// and their HELP/TYPE lines), as written.
pub fn keep_doctor_families(text: &str) -> String {
    let mut out = String::with_capacity(text.len() / 2);
    for line in text.lines() {
        let keep = if let Some(c) = line.strip_prefix('#') {
            let mut w = c.split_whitespace();
            matches!(w.next(), Some("HELP" | "TYPE"))
                && w.next().and_then(names::family_of).is_some()
        } else {
            let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
            names::family_of(&line[..name_end]).is_some()
        };
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// One snapshot's chunk of a recording.
pub fn chunk(t: f64, exposition: &str) -> String {
    let mut s = format!("{MARKER}{t:.3}\n{exposition}");
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Exposition text for samples that came without it (Prometheus query results).
pub fn exposition_of(samples: &[Sample]) -> String {
    let mut s = String::new();
    for x in samples {
        s.push_str(&expo::write_sample(x));
        s.push('\n');
    }
    s
}

/// A recording's error: which snapshot and what.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct RecordingError(pub String);

/// Splits a recording into its snapshots' times and exposition texts.
///
/// # Errors
/// [`RecordingError`] when the header or a marker is malformed.
pub fn split(text: &str) -> Result<Vec<(f64, String)>, RecordingError> {
    let mut lines = text.lines();
    if lines.next().map(str::trim_end) != Some(HEADER) {
        return Err(RecordingError(format!(
            "not a doctor recording (first line is not `{HEADER}`)"
        )));
    }
    let mut out: Vec<(f64, String)> = Vec::new();
    for line in lines {
        if let Some(t) = line.strip_prefix(MARKER) {
            let t: f64 = t
                .trim()
                .parse()
                .map_err(|_| RecordingError(format!("bad snapshot marker `{line}`")))?;
            out.push((t, String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        } else if !line.trim().is_empty() && !line.starts_with('#') {
            return Err(RecordingError(
                "samples before the first snapshot marker".into(),
            ));
        }
    }
    Ok(out)
}

/// Reads a recording into a series.
///
/// # Errors
/// [`RecordingError`] when the header or a marker is malformed, or a chunk is not
/// exposition text.
pub fn parse(text: &str) -> Result<Series, RecordingError> {
    let mut snapshots = Vec::new();
    for (t, body) in split(text)? {
        let Exposition { samples, .. } =
            expo::parse(&body).map_err(|e| RecordingError(format!("snapshot t={t:.3}: {e}")))?;
        snapshots.push(Snapshot { t, samples });
    }
    Ok(Series::new(snapshots))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_round_trips_and_filters() {
        let text = "# HELP vllm:num_requests_waiting W.\n# TYPE vllm:num_requests_waiting gauge\n\
                    vllm:num_requests_waiting{model_name=\"m\"} 4.0\n\
                    # TYPE vllm:lora_requests_info gauge\nvllm:lora_requests_info{x=\"\"} 0.0\n\
                    vllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 2.0\n";
        let kept = keep_doctor_families(text);
        assert!(kept.contains("# TYPE vllm:num_requests_waiting gauge"));
        assert!(kept.contains("vllm:time_to_first_token_seconds_bucket"));
        assert!(!kept.contains("lora"), "{kept}");
        let rec = format!("{HEADER}\n{}{}", chunk(5.0, &kept), chunk(0.0, &kept));
        let s = parse(&rec).unwrap();
        assert_eq!(s.snapshots.len(), 2);
        assert_eq!(s.snapshots[0].t, 0.0, "sorted by time");
        assert_eq!(
            s.sum("vllm:num_requests_waiting"),
            vec![(0.0, 4.0), (5.0, 4.0)]
        );
    }

    #[test]
    fn bad_recordings_say_why() {
        assert!(
            parse("vllm:x 1\n")
                .unwrap_err()
                .0
                .contains("not a doctor recording")
        );
        let e = parse(&format!("{HEADER}\n# snapshot t=abc\n"))
            .unwrap_err()
            .0;
        assert!(e.contains("bad snapshot marker"), "{e}");
        let e = parse(&format!("{HEADER}\n# snapshot t=1\nvllm:x{{ 1\n"))
            .unwrap_err()
            .0;
        assert!(e.starts_with("snapshot t=1.000: line 1:"), "{e}");
        let e = parse(&format!("{HEADER}\nvllm:x 1\n")).unwrap_err().0;
        assert!(e.contains("before the first snapshot"), "{e}");
    }
}

//! Prometheus text exposition (format 0.0.4, and the OpenMetrics lines vLLM's
//! client can emit) parsed into samples: metric name, labels, value. `# TYPE`
//! lines give each family its type; `# HELP` and other comments are skipped;
//! label values unescape `\\`, `\"` and `\n`; values take Go's float spellings
//! (`NaN`, `+Inf`, `-Inf`); a trailing timestamp and an OpenMetrics exemplar
//! (` # {...} v`) are accepted and dropped. Pure: no I/O.

use std::collections::HashMap;

/// A family's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's own name (`vllm:ttft_seconds_bucket`, not the family).
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// Family name → declared type.
    pub types: HashMap<String, MetricType>,
}

/// A line that is not valid exposition text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    pub message: String,
}

/// Parses an exposition.
///
/// # Errors
/// [`ParseError`] at the first line that is neither a comment nor a sample.
pub fn parse(text: &str) -> Result<Exposition, ParseError> {
    let mut out = Exposition::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
        let err = |message: String| ParseError {
            line: i + 1,
            message,
        };
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE") {
                let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                    return Err(err("TYPE line without a name and a type".into()));
                };
                let kind = match kind {
                    "counter" => MetricType::Counter,
                    "gauge" => MetricType::Gauge,
                    "histogram" | "gaugehistogram" => MetricType::Histogram,
                    "summary" => MetricType::Summary,
                    "untyped" | "unknown" | "info" | "stateset" => MetricType::Untyped,
                    other => return Err(err(format!("unknown metric type `{other}`"))),
                };
                out.types.insert(name.to_string(), kind);
            }
            continue;
        }
        out.samples.push(sample(line).map_err(err)?);
    }
    Ok(out)
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn sample(line: &str) -> Result<Sample, String> {
    let mut chars = line.char_indices().peekable();
    match chars.peek() {
        Some(&(_, c)) if is_name_start(c) => {}
        _ => return Err(format!("expected a metric name at `{}`", excerpt(line))),
    }
    let end = line
        .char_indices()
        .find(|&(_, c)| !is_name_char(c))
        .map_or(line.len(), |(i, _)| i);
    let name = line[..end].to_string();
    let mut rest = line[end..].trim_start_matches([' ', '\t']);
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    // OpenMetrics exemplar after the value: ` # {trace_id="..."} 1.0`.
    let rest = rest.split(" #").next().unwrap_or(rest);
    let mut fields = rest.split_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| format!("`{name}` has no value"))?;
    let value =
        parse_float(value).ok_or_else(|| format!("`{name}` value `{value}` is not a number"))?;
    if let Some(ts) = fields.next()
        && ts.parse::<f64>().is_err()
    {
        return Err(format!("`{name}` timestamp `{ts}` is not a number"));
    }
    if let Some(extra) = fields.next() {
        return Err(format!("`{name}` has trailing `{extra}`"));
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Parses `k="v",...}` (after the `{`), returning what follows the `}`.
fn parse_labels<'a>(mut s: &'a str, labels: &mut Vec<(String, String)>) -> Result<&'a str, String> {
    loop {
        s = s.trim_start_matches([' ', '\t']);
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let end = s.find(|c: char| !is_name_char(c)).unwrap_or(s.len());
        if end == 0 || !s.starts_with(is_name_start) {
            return Err(format!("expected a label name at `{}`", excerpt(s)));
        }
        let key = s[..end].to_string();
        s = s[end..].trim_start_matches([' ', '\t']);
        s = s
            .strip_prefix('=')
            .ok_or_else(|| format!("label `{key}` has no `=`"))?
            .trim_start_matches([' ', '\t']);
        s = s
            .strip_prefix('"')
            .ok_or_else(|| format!("label `{key}` value is not quoted"))?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let close = loop {
            match chars.next() {
                None => return Err(format!("label `{key}` value is not terminated")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    // Unknown escapes are kept as written, as Prometheus does.
                    Some((_, c)) => {
                        value.push('\\');
                        value.push(c);
                    }
                    None => return Err(format!("label `{key}` value is not terminated")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key, value));
        s = s[close + 1..].trim_start_matches([' ', '\t']);
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err(format!("expected `,` or `}}` at `{}`", excerpt(s)));
        }
    }
}

/// Go's `strconv.ParseFloat` spellings as Prometheus writes them.
fn parse_float(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "nan" => Some(f64::NAN),
        "+inf" | "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse::<f64>().ok(),
    }
}

fn excerpt(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Escapes a label value for the text format.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes one sample line (no trailing newline), floats as Prometheus writes them.
pub fn write_sample(s: &Sample) -> String {
    let mut out = s.name.clone();
    if !s.labels.is_empty() {
        let labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
            .collect();
        out.push('{');
        out.push_str(&labels.join(","));
        out.push('}');
    }
    let v = if s.value.is_nan() {
        "NaN".to_string()
    } else if s.value == f64::INFINITY {
        "+Inf".to_string()
    } else if s.value == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{}", s.value)
    };
    out.push(' ');
    out.push_str(&v);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANDELA: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smol"} 3.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",model_name="smol",le="0.001"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",model_name="smol",le="+Inf"} 7.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="smol"} 7.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="smol"} 0.011178568000000055
vllm:spec_decode_draft_acceptance_rate{engine="0",model_name="smol"} NaN
"#;

    #[test]
    fn parses_candela_exposition() {
        let e = parse(CANDELA).unwrap();
        assert_eq!(e.samples.len(), 6);
        assert_eq!(e.types["vllm:num_requests_running"], MetricType::Gauge);
        assert_eq!(
            e.types["vllm:time_to_first_token_seconds"],
            MetricType::Histogram
        );
        let s = &e.samples[2];
        assert_eq!(s.name, "vllm:time_to_first_token_seconds_bucket");
        assert_eq!(s.label("le"), Some("+Inf"));
        assert_eq!(s.label("model_name"), Some("smol"));
        assert_eq!(s.value, 7.0);
        assert_eq!(e.samples[4].value, 0.011178568000000055);
        assert!(e.samples[5].value.is_nan());
    }

    #[test]
    fn escapes_timestamps_spaces_and_exemplars() {
        let text = concat!(
            "m{path=\"C:\\\\dir\",msg=\"say \\\"hi\\\"\\nbye\",odd=\"\\t\"} 1 1700000000000\n",
            "m2 { a = \"x\" , } -Inf\n",
            "m3 +Inf\n",
            "m4_total 5 # {trace_id=\"abc\"} 1.0 1700000000.1\n",
            "m5{} 1e3\n",
            "\n# a free comment\n# EOF\n",
        );
        let e = parse(text).unwrap();
        assert_eq!(e.samples[0].label("path"), Some("C:\\dir"));
        assert_eq!(e.samples[0].label("msg"), Some("say \"hi\"\nbye"));
        assert_eq!(e.samples[0].label("odd"), Some("\\t"));
        assert_eq!(e.samples[1].labels, vec![("a".into(), "x".into())]);
        assert_eq!(e.samples[1].value, f64::NEG_INFINITY);
        assert_eq!(e.samples[2].value, f64::INFINITY);
        assert_eq!(e.samples[3].value, 5.0);
        assert_eq!(e.samples[4].value, 1000.0);
    }

    #[test]
    fn rejects_what_is_not_exposition() {
        for (text, want) in [
            ("<!DOCTYPE html>", "line 1: expected a metric name"),
            ("ok\n{\"status\":\"up\"}", "line 1: `ok` has no value"),
            ("m{a=\"x} 1", "not terminated"),
            ("m{a=x} 1", "not quoted"),
            ("m{a=\"x\" b=\"y\"} 1", "expected `,` or `}`"),
            ("m one", "value `one` is not a number"),
            ("m 1 2 3", "trailing `3`"),
            ("# TYPE m histogrammy", "unknown metric type"),
            ("m 1\nm 1 x", "line 2: `m` timestamp `x`"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn write_then_parse_round_trips() {
        let s = Sample {
            name: "vllm:x_bucket".into(),
            labels: vec![
                ("le".into(), "+Inf".into()),
                ("m".into(), "a\"b\\c\nd".into()),
            ],
            value: 0.25,
        };
        let e = parse(&write_sample(&s)).unwrap();
        assert_eq!(e.samples, vec![s]);
    }
}

//! Reading a window from Prometheus instead of scraping: one `query_range` over
//! the HTTP API for every family doctor reads (a `__name__` regex merged with
//! the user's `--selector`), turned into the same [`Series`] a scrape gives —
//! one snapshot per evaluation step, series labels as scraped (minus `__name__`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::expo::Sample;
use super::names;
use super::scrape::{self, Client, now};
use super::series::{Series, Snapshot};
use crate::error::{Error, Result};

/// Prometheus refuses ranges of more than 11,000 points per series.
const MAX_POINTS: f64 = 11_000.0;

/// The PromQL selector for every family doctor reads, narrowed by `selector`
/// (`{namespace="x",model_name="y"}` or empty).
///
/// # Errors
/// [`Error::InvalidArgs`] when `selector` is not a `{...}` matcher list.
pub fn query(selector: &str) -> Result<String> {
    let sel = selector.trim();
    let inner = if sel.is_empty() {
        ""
    } else {
        sel.strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .ok_or_else(|| {
                Error::InvalidArgs(format!(
                    "--selector `{selector}` is not a label matcher list like {{namespace=\"x\",model_name=\"y\"}}"
                ))
            })?
            .trim()
    };
    if inner.contains("__name__") {
        return Err(Error::InvalidArgs(
            "--selector must not match __name__: doctor chooses the metrics".into(),
        ));
    }
    let families = names::FAMILIES.join("|");
    let mut q = format!("{{__name__=~\"(?:{families})(?:_bucket|_sum|_count)?\"");
    if !inner.is_empty() {
        q.push(',');
        q.push_str(inner.trim_end_matches(','));
    }
    q.push('}');
    Ok(q)
}

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Matrix>,
}

#[derive(Deserialize)]
struct Matrix {
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

/// Turns a `query_range` answer (JSON) into a series.
///
/// # Errors
/// [`Error::Http`] for error answers, non-matrix results and unparsable JSON.
pub fn parse_response(url: &str, body: &str) -> Result<Series> {
    let err = |m: String| Error::Http {
        url: url.to_string(),
        message: m,
    };
    let r: Response = serde_json::from_str(body)
        .map_err(|e| err(format!("not a Prometheus API answer ({e})")))?;
    if r.status != "success" {
        return Err(err(format!(
            "Prometheus said {}: {}",
            r.error_type.unwrap_or_else(|| r.status.clone()),
            r.error.unwrap_or_default()
        )));
    }
    let data = r.data.ok_or_else(|| err("answer without data".into()))?;
    if data.result_type != "matrix" {
        return Err(err(format!("expected a matrix, got {}", data.result_type)));
    }
    // Key by milliseconds so equal step times meet exactly.
    let mut by_t: BTreeMap<i64, Vec<Sample>> = BTreeMap::new();
    for m in data.result {
        let mut labels = m.metric;
        let Some(name) = labels.remove("__name__") else {
            continue;
        };
        let labels: Vec<(String, String)> = labels.into_iter().collect();
        for (t, v) in m.values {
            let value = match v.as_str() {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                _ => v
                    .parse()
                    .map_err(|_| err(format!("sample value `{v}` is not a number")))?,
            };
            by_t.entry((t * 1000.0).round() as i64)
                .or_default()
                .push(Sample {
                    name: name.clone(),
                    labels: labels.clone(),
                    value,
                });
        }
    }
    Ok(Series::new(
        by_t.into_iter()
            .map(|(ms, samples)| Snapshot {
                t: ms as f64 / 1000.0,
                samples,
            })
            .collect(),
    ))
}

/// Reads the last `window` from Prometheus at `base` (its root URL), one point per `step`.
///
/// # Errors
/// [`Error::InvalidArgs`] for a bad selector or too many points; [`Error::Http`]
/// when Prometheus cannot be reached, refuses the query, or has no matching series.
pub async fn read_window(
    client: &Client,
    base: &str,
    selector: &str,
    window: Duration,
    step: Duration,
) -> Result<Series> {
    let q = query(selector)?;
    if window.as_secs_f64() / step.as_secs_f64() > MAX_POINTS {
        return Err(Error::InvalidArgs(format!(
            "--window / --interval is more than {MAX_POINTS} points: use a longer --interval"
        )));
    }
    let url = format!("{}/api/v1/query_range", base.trim_end_matches('/'));
    let end = now();
    let params = [
        ("query", q),
        ("start", format!("{:.3}", end - window.as_secs_f64())),
        ("end", format!("{end:.3}")),
        ("step", format!("{}", step.as_secs_f64())),
    ];
    let (status, body) = client.get_any(&url, &params).await?;
    // Prometheus explains a refused query in a JSON body with a 4xx/5xx status.
    let series = match parse_response(&url, &body) {
        Err(_) if !status.is_success() && !body.trim_start().starts_with('{') => {
            return Err(scrape::status_err(&url, status, &body));
        }
        other => other?,
    };
    if series.snapshots.is_empty() {
        return Err(Error::Http {
            url,
            message: format!(
                "no vllm:* series{} in the last {:.0} s",
                if selector.trim().is_empty() {
                    String::new()
                } else {
                    format!(" match {selector}")
                },
                window.as_secs_f64()
            ),
        });
    }
    Ok(series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_merges_the_selector() {
        let q = query("{namespace=\"llm\", model_name=\"smol\"}").unwrap();
        assert!(
            q.starts_with("{__name__=~\"(?:vllm:num_requests_running|"),
            "{q}"
        );
        assert!(
            q.ends_with(")(?:_bucket|_sum|_count)?\",namespace=\"llm\", model_name=\"smol\"}"),
            "{q}"
        );
        assert!(query("").unwrap().ends_with("?\"}"));
        assert!(
            query("namespace=\"x\"")
                .unwrap_err()
                .to_string()
                .contains("--selector")
        );
        assert!(
            query("{__name__=\"x\"}")
                .unwrap_err()
                .to_string()
                .contains("__name__")
        );
    }

    #[test]
    fn matrix_answers_become_snapshots() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"vllm:num_requests_waiting","pod":"a"},"values":[[100,"3"],[105,"4"]]},
            {"metric":{"__name__":"vllm:num_requests_waiting","pod":"b"},"values":[[105,"NaN"]]}]}}"#;
        let s = parse_response("u", body).unwrap();
        assert_eq!(s.snapshots.len(), 2);
        assert_eq!(s.snapshots[1].samples.len(), 2);
        assert_eq!(
            s.max("vllm:num_requests_waiting"),
            vec![(100.0, 3.0), (105.0, 4.0)]
        );
        assert_eq!(s.snapshots[0].samples[0].label("pod"), Some("a"));
    }

    #[test]
    fn error_answers_are_one_line() {
        let e = parse_response(
            "u",
            r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "u: Prometheus said bad_data: parse error");
        let e = parse_response("u", "<html>").unwrap_err().to_string();
        assert!(e.starts_with("u: not a Prometheus API answer"), "{e}");
    }
}

//! The HTTP side of `candela doctor`: scraping a `/metrics` endpoint (bearer
//! token optional) every interval over a window, and turning every way that can
//! fail into one clear line — unreachable, timed out, 401/403, another status,
//! a body that is not Prometheus text, or Prometheus text without vLLM metrics.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::expo;
use crate::error::{Error, Result};

/// Seconds a single HTTP request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP client with the optional bearer token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    token: Option<String>,
}

fn http_err(url: &str, message: impl Into<String>) -> Error {
    Error::Http {
        url: url.to_string(),
        message: message.into(),
    }
}

/// `HTTP 404 Not Found: <first line of the body>`.
pub fn status_err(url: &str, status: reqwest::StatusCode, body: &str) -> Error {
    let first: String = body
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(120)
        .collect();
    http_err(url, format!("HTTP {status}: {first}"))
}

/// The innermost cause of a reqwest error (`Connection refused (os error 111)`).
fn root_cause(e: &reqwest::Error) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Unix time now, seconds.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Client {
    /// # Errors
    /// [`Error::InvalidArgs`] if the HTTP client cannot be built.
    pub fn new(token: Option<String>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| Error::InvalidArgs(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// GETs `url` (with `query`): the status and body of any answer but 401/403.
    ///
    /// # Errors
    /// [`Error::Http`] with one line saying what went wrong.
    pub async fn get_any(
        &self,
        url: &str,
        query: &[(&str, String)],
    ) -> Result<(reqwest::StatusCode, String)> {
        if url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            // reqwest is built without TLS here (no TLS stack in the dependency tree).
            return Err(http_err(
                url,
                "https is not supported: scrape the endpoint over http (e.g. through \
                 kubectl port-forward) or read it from Prometheus with --prometheus",
            ));
        }
        let mut req = self.http.get(url).query(query);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                http_err(
                    url,
                    format!("timed out after {} s", REQUEST_TIMEOUT.as_secs()),
                )
            } else if e.is_connect() {
                http_err(url, format!("cannot connect: {}", root_cause(&e)))
            } else if e.is_builder() {
                http_err(url, format!("not a usable http:// URL: {}", root_cause(&e)))
            } else {
                http_err(url, format!("request failed: {}", root_cause(&e)))
            }
        })?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            let what = if self.token.is_some() {
                "the bearer token was refused"
            } else {
                "it wants a bearer token (--bearer-token or CANDELA_METRICS_TOKEN)"
            };
            return Err(http_err(url, format!("{status}: {what}")));
        }
        let body = resp
            .text()
            .await
            .map_err(|e| http_err(url, format!("reading the body: {}", root_cause(&e))))?;
        Ok((status, body))
    }

    /// GETs `url` (with `query`) and returns the body of a 2xx answer.
    ///
    /// # Errors
    /// As [`Client::get_any`], and [`Error::Http`] for any other status.
    pub async fn get(&self, url: &str, query: &[(&str, String)]) -> Result<String> {
        let (status, body) = self.get_any(url, query).await?;
        if !status.is_success() {
            return Err(status_err(url, status, &body));
        }
        Ok(body)
    }

    /// Scrapes a metrics endpoint once; the text must be Prometheus exposition
    /// with vLLM metrics in it.
    ///
    /// # Errors
    /// As [`Client::get`], and [`Error::Http`] when the body is not vLLM metrics.
    pub async fn scrape(&self, url: &str) -> Result<String> {
        let body = self.get(url, &[]).await?;
        check_metrics(url, &body)?;
        Ok(body)
    }

    /// Scrapes `url` at once and then every `interval` until `window` has passed:
    /// `window / interval + 1` snapshots, each with its Unix time. `progress` is
    /// told after each scrape (done, total).
    ///
    /// # Errors
    /// The first failing scrape's error.
    pub async fn scrape_window(
        &self,
        url: &str,
        window: Duration,
        interval: Duration,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Vec<(f64, String)>> {
        let total = (window.as_secs_f64() / interval.as_secs_f64()).floor() as usize + 1;
        let start = Instant::now();
        let mut out = Vec::with_capacity(total);
        for i in 0..total {
            let due = start + interval.mul_f64(i as f64);
            tokio::time::sleep_until(due.into()).await;
            let t = now();
            out.push((t, self.scrape(url).await?));
            progress(i + 1, total);
        }
        Ok(out)
    }
}

/// Checks that `body` is exposition text holding `vllm:` samples.
///
/// # Errors
/// [`Error::Http`] naming what the body is instead.
pub fn check_metrics(url: &str, body: &str) -> Result<()> {
    let e = expo::parse(body)
        .map_err(|e| http_err(url, format!("the answer is not Prometheus metrics ({e})")))?;
    if !e.samples.iter().any(|s| s.name.starts_with("vllm:")) {
        return Err(http_err(
            url,
            format!(
                "no vllm:* metrics among {} samples: not a vLLM / Candela metrics endpoint",
                e.samples.len()
            ),
        ));
    }
    Ok(())
}

//! Hub settings from flags and the environment variables Hugging Face's own clients read,
//! with their precedence, so a shell or pod configured for Python tools works unchanged.

use std::path::{Path, PathBuf};

use candela_contract::env;

/// Default hub endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where and how to reach the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// Base URL without a trailing slash (`HF_ENDPOINT`).
    pub endpoint: String,
    /// The hub cache (`--download-dir`, `HF_HUB_CACHE`, `$HF_HOME/hub`, …).
    pub cache_dir: PathBuf,
    /// Bearer token (`--hf-token`/`HF_TOKEN`, else the token file).
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE`: serve from the cache, never touch the network.
    pub offline: bool,
}

impl HubOptions {
    /// Reads the process environment. `download_dir` and `token` are the flags (clap has
    /// already folded `HF_TOKEN` into `token`).
    pub fn from_env(download_dir: Option<&Path>, token: Option<&str>) -> Self {
        Self::from_vars(download_dir, token, |k| {
            std::env::var(k).ok().filter(|v| !v.is_empty())
        })
    }

    /// [`Self::from_env`] over any variable lookup (for tests). Precedence, as
    /// `huggingface_hub`: cache = flag, `HF_HUB_CACHE`, `$HF_HOME/hub`,
    /// `$XDG_CACHE_HOME/huggingface/hub`, `~/.cache/huggingface/hub`; token = flag/`HF_TOKEN`,
    /// then the file `HF_TOKEN_PATH` or `$HF_HOME/token`.
    pub fn from_vars(
        download_dir: Option<&Path>,
        token: Option<&str>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let hf_home = var(env::HF_HOME).map(PathBuf::from).unwrap_or_else(|| {
            var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| Path::new(&h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from("/tmp"))
                .join("huggingface")
        });
        let cache_dir = download_dir
            .map(Path::to_path_buf)
            .or_else(|| var(env::HF_HUB_CACHE).map(PathBuf::from))
            .or_else(|| var("HUGGINGFACE_HUB_CACHE").map(PathBuf::from))
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = token
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .or_else(|| {
                let file = var("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| hf_home.join("token"));
                std::fs::read_to_string(file)
                    .ok()
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
            });
        let offline = var(env::HF_HUB_OFFLINE).is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "on" | "yes" | "true"
            )
        });
        let endpoint = var(env::HF_ENDPOINT)
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned())
            .trim_end_matches('/')
            .to_owned();
        Self {
            endpoint,
            cache_dir,
            token,
            offline,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn opts(vars: &[(&str, &str)], dir: Option<&str>, token: Option<&str>) -> HubOptions {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubOptions::from_vars(dir.map(Path::new), token, |k| vars.get(k).cloned())
    }

    #[test]
    fn precedence_follows_huggingface_hub() {
        let o = opts(&[("HOME", "/home/u")], None, None);
        assert_eq!(o.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(o.endpoint, "https://huggingface.co");
        assert!(!o.offline && o.token.is_none());
        let o = opts(&[("HOME", "/h"), ("HF_HOME", "/hf")], None, None);
        assert_eq!(o.cache_dir, PathBuf::from("/hf/hub"));
        let o = opts(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/c")], None, None);
        assert_eq!(o.cache_dir, PathBuf::from("/c"));
        let o = opts(&[("HF_HUB_CACHE", "/c")], Some("/flag"), None);
        assert_eq!(o.cache_dir, PathBuf::from("/flag"));
        let o = opts(&[("XDG_CACHE_HOME", "/x")], None, None);
        assert_eq!(o.cache_dir, PathBuf::from("/x/huggingface/hub"));
        let o = opts(
            &[
                ("HF_ENDPOINT", "http://mirror:8080/"),
                ("HF_HUB_OFFLINE", "TRUE"),
            ],
            None,
            Some("hf_t"),
        );
        assert_eq!(o.endpoint, "http://mirror:8080");
        assert!(o.offline);
        assert_eq!(o.token.as_deref(), Some("hf_t"));
        assert!(!opts(&[("HF_HUB_OFFLINE", "0")], None, None).offline);
    }

    #[test]
    fn token_file_when_no_flag() {
        let dir = std::env::temp_dir().join(format!("candela-hub-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "hf_file\n").unwrap();
        let home = dir.to_str().unwrap();
        assert_eq!(
            opts(&[("HF_HOME", home)], None, None).token.as_deref(),
            Some("hf_file")
        );
        assert_eq!(
            opts(&[("HF_HOME", home)], None, Some("hf_flag"))
                .token
                .as_deref(),
            Some("hf_flag")
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}

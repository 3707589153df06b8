//! The hub client against a local hub (`tests/fake_hub.py`, the hub's file protocol with
//! its error codes and fault injection): downloads land in the hub's cache layout, resume
//! after a cut connection and across runs, are verified, are not repeated, work offline
//! and under a lock held by another process, and every failure is one clear line.

use std::path::{Path, PathBuf};

use candela_hub::fake::FakeHub;
use candela_hub::{Error, HubOptions, ModelRef, Request, resolve};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("candela-hubtest-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Deterministic pseudo-random bytes (a model file's stand-in: the client never parses it).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const GGUF: &str = "tiny-model.Q4_1.gguf";
const SIZE: usize = 12 << 20;

/// A GGUF repository with two revisions and an HF-directory repository with two shards.
fn repos(root: &Path) -> serde_json::Value {
    let main = root.join("gguf-main");
    let v1 = root.join("gguf-v1");
    let hf = root.join("hf");
    for d in [&main, &v1, &hf] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(main.join(GGUF), noise(SIZE, 1)).unwrap();
    std::fs::write(main.join("tiny-model.Q8_0.gguf"), noise(1 << 20, 2)).unwrap();
    std::fs::write(main.join("README.md"), "# tiny\n").unwrap();
    std::fs::write(v1.join(GGUF), noise(SIZE, 3)).unwrap();
    std::fs::write(hf.join("config.json"), r#"{"model_type":"llama"}"#).unwrap();
    std::fs::write(hf.join("tokenizer.json"), "{}").unwrap();
    std::fs::write(
        hf.join("model-00001-of-00002.safetensors"),
        noise(2 << 20, 4),
    )
    .unwrap();
    std::fs::write(
        hf.join("model-00002-of-00002.safetensors"),
        noise(1 << 20, 5),
    )
    .unwrap();
    std::fs::write(
        hf.join("model.safetensors.index.json"),
        r#"{"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    std::fs::write(hf.join("pytorch_model.bin"), noise(1 << 20, 6)).unwrap();
    serde_json::json!({
        "tokens": ["hf_good", "hf_other"],
        "repos": {
            "t/gguf": {"revisions": {"main": main, "v1": v1}},
            "t/hf": {"revisions": {"main": hf}},
            "t/private": {"revisions": {"main": main}, "private": true},
            "t/gated": {"revisions": {"main": main}, "gated": true, "granted": ["hf_good"]},
        }
    })
}

fn opts(endpoint: &str, cache: &Path) -> HubOptions {
    HubOptions {
        endpoint: endpoint.to_owned(),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline: false,
    }
}

fn model(s: &str) -> ModelRef {
    ModelRef::parse(s, |_| false).unwrap()
}

async fn get(m: &str, rev: Option<&str>, o: &HubOptions) -> Result<candela_hub::Resolved, Error> {
    resolve(
        &model(m),
        &Request {
            revision: rev,
            gguf_file: None,
        },
        o,
    )
    .await
}

#[tokio::test]
async fn downloads_into_the_hub_cache_once_then_serves_offline() {
    let root = tmp("cache");
    let hub = FakeHub::start(&repos(&root), &root);
    let cache = root.join("cache");
    let o = opts(&hub.url(), &cache);

    let r = get("hf://t/gguf:Q4_1", None, &o).await.unwrap();
    let origin = r.hub.clone().unwrap();
    assert_eq!(
        (origin.repo.as_str(), origin.revision.as_str()),
        ("t/gguf", "main")
    );
    let want = noise(SIZE, 1);
    assert_eq!(std::fs::read(&r.path).unwrap(), want);
    // The hub's layout: snapshot symlink → blob named by sha256, refs/main → commit.
    let repo_dir = cache.join("models--t--gguf");
    assert_eq!(
        r.path,
        repo_dir.join("snapshots").join(&origin.commit).join(GGUF)
    );
    assert_eq!(
        std::fs::read_link(&r.path).unwrap(),
        Path::new("../../blobs").join(sha256_hex(&want))
    );
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        origin.commit
    );
    assert!(
        std::fs::metadata(cache.join(".locks/models--t--gguf"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(hub.downloads(&sha256_hex(&want)).len(), 1);

    // Second start: repository info only, no file is downloaded again.
    let again = get("t/gguf:Q4_1", None, &o).await.unwrap();
    assert_eq!(again, r);
    assert_eq!(hub.downloads(&sha256_hex(&want)).len(), 1);

    // A revision pins another file; main is unchanged.
    let v1 = get("hf://t/gguf:Q4_1", Some("v1"), &o).await.unwrap();
    let v1_origin = v1.hub.clone().unwrap();
    assert_ne!(v1_origin.commit, origin.commit);
    assert_eq!(std::fs::read(&v1.path).unwrap(), noise(SIZE, 3));
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/v1")).unwrap(),
        v1_origin.commit
    );
    // ... and a commit id as revision needs no ref.
    let pinned = get("hf://t/gguf:Q4_1", Some(&origin.commit), &o)
        .await
        .unwrap();
    assert_eq!(pinned.path, r.path);

    // Offline: nothing but the cache, even with the hub gone.
    drop(hub);
    let offline = HubOptions {
        offline: true,
        ..o.clone()
    };
    assert_eq!(get("hf://t/gguf:Q4_1", None, &offline).await.unwrap(), r);
    assert_eq!(
        get("hf://t/gguf:Q4_1", Some("v1"), &offline).await.unwrap(),
        v1
    );
    // Unreachable hub, not offline: the complete cached snapshot, with a warning.
    assert_eq!(get("hf://t/gguf:Q4_1", None, &o).await.unwrap(), r);
    // What was never downloaded is a clear line either way.
    let e = get("hf://t/gguf:Q8_0", None, &offline).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, Error::NotCached { .. })
            && msg.contains("HF_HUB_OFFLINE")
            && !msg.contains('\n'),
        "{msg}"
    );
    let e = get("hf://t/other", None, &o).await.unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains("HF_HUB_OFFLINE=1"), "{e}");
    std::fs::remove_dir_all(&root).ok();
}

#[tokio::test]
async fn a_cut_connection_resumes_and_a_stuck_one_leaves_a_resumable_partial() {
    let root = tmp("faults");
    let hub = FakeHub::start(&repos(&root), &root);
    let cache = root.join("cache");
    let o = opts(&hub.url(), &cache);
    let want = noise(SIZE, 1);
    let sha = sha256_hex(&want);

    // Cut once at 5 MiB: the same run resumes with a Range request.
    hub.cut(GGUF, 5 << 20, 1);
    let r = get("hf://t/gguf:Q4_1", None, &o).await.unwrap();
    assert_eq!(std::fs::read(&r.path).unwrap(), want);
    let gets = hub.downloads(&sha);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0]["bytes"], 5 << 20);
    assert_eq!(gets[1]["status"], 206);
    assert_eq!(gets[1]["range"], format!("bytes={}-", 5 << 20));

    // Cut on every attempt: one line, no blob, the partial stays for the next start.
    let cache2 = root.join("cache2");
    let o2 = opts(&hub.url(), &cache2);
    hub.reset();
    hub.cut(GGUF, 1 << 20, 100);
    let e = get("hf://t/gguf:Q4_1", None, &o2).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, Error::Interrupted { attempts: 6, .. })
            && msg.contains("the next start resumes it")
            && !msg.contains('\n'),
        "{msg}"
    );
    let blobs = cache2.join("models--t--gguf/blobs");
    assert!(!blobs.join(&sha).exists());
    let partial = blobs.join(format!("{sha}.incomplete"));
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 6 << 20);
    // Next start, connection healthy again: resumes at 6 MiB.
    hub.reset();
    let r2 = get("hf://t/gguf:Q4_1", None, &o2).await.unwrap();
    assert_eq!(std::fs::read(&r2.path).unwrap(), want);
    let gets = hub.downloads(&sha);
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0]["range"], format!("bytes={}-", 6 << 20));
    assert!(!partial.exists());

    // A corrupt partial (wrong bytes, right length so far) never becomes a blob: the
    // resumed file fails sha256, is removed, and is downloaded again from the start.
    let cache3 = root.join("cache3");
    let blobs3 = cache3.join("models--t--gguf/blobs");
    std::fs::create_dir_all(&blobs3).unwrap();
    std::fs::write(
        blobs3.join(format!("{sha}.incomplete")),
        noise(SIZE - 100, 9),
    )
    .unwrap();
    hub.reset();
    let r3 = get("hf://t/gguf:Q4_1", None, &opts(&hub.url(), &cache3))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&r3.path).unwrap(), want);
    let gets = hub.downloads(&sha);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0]["range"], format!("bytes={}-", SIZE - 100));
    assert!(gets[1]["range"].is_null());
    std::fs::remove_dir_all(&root).ok();
}

#[tokio::test]
async fn a_download_waits_for_the_lock_another_process_holds() {
    let root = tmp("lock");
    let hub = FakeHub::start(&repos(&root), &root);
    let cache = root.join("cache");
    let o = opts(&hub.url(), &cache);
    let sha = sha256_hex(&noise(SIZE, 1));
    // Hold the blob's lock as another pod sharing the cache volume would.
    let lock_path = cache.join(format!(".locks/models--t--gguf/{sha}.lock"));
    std::fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    let held = std::fs::File::create(&lock_path).unwrap();
    held.lock().unwrap();
    let task = tokio::spawn({
        let o = o.clone();
        async move { get("hf://t/gguf:Q4_1", None, &o).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(!task.is_finished());
    assert!(hub.downloads(&sha).is_empty());
    held.unlock().unwrap();
    let r = task.await.unwrap().unwrap();
    assert_eq!(std::fs::read(&r.path).unwrap(), noise(SIZE, 1));
    assert_eq!(hub.downloads(&sha).len(), 1);
    std::fs::remove_dir_all(&root).ok();
}

#[tokio::test]
async fn hf_directories_fetch_config_tokenizer_and_the_indexed_shards() {
    let root = tmp("hfdir");
    let hub = FakeHub::start(&repos(&root), &root);
    let cache = root.join("cache");
    let r = get("hf://t/hf", None, &opts(&hub.url(), &cache))
        .await
        .unwrap();
    let commit = r.hub.unwrap().commit;
    assert_eq!(r.path, cache.join("models--t--hf/snapshots").join(&commit));
    let mut files: Vec<String> = std::fs::read_dir(&r.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json"
        ]
    );
    assert_eq!(
        std::fs::read(r.path.join("model-00002-of-00002.safetensors")).unwrap(),
        noise(1 << 20, 5)
    );
    // Small (git) files are blobs named by their git sha1.
    let config = std::fs::read_link(r.path.join("config.json")).unwrap();
    assert_eq!(config.file_name().unwrap().len(), 40);
    assert!(hub.downloads("pytorch_model.bin").is_empty());
    std::fs::remove_dir_all(&root).ok();
}

#[tokio::test]
async fn hub_errors_are_one_clear_line() {
    let root = tmp("errors");
    let hub = FakeHub::start(&repos(&root), &root);
    let cache = root.join("cache");
    let o = opts(&hub.url(), &cache);
    let with = |token: &str| HubOptions {
        token: Some(token.to_owned()),
        ..o.clone()
    };
    let cases: Vec<(Result<_, Error>, &str)> = vec![
        (
            get("hf://t/missing", None, &o).await,
            "repository not found",
        ),
        (
            get("hf://t/private", None, &o).await,
            "--hf-token or HF_TOKEN",
        ),
        (
            get("hf://t/private", None, &with("hf_bad")).await,
            "refused the token",
        ),
        (get("hf://t/gated:Q4_1", None, &o).await, "is gated"),
        (
            get("hf://t/gated:Q4_1", None, &with("hf_other")).await,
            "has no access yet",
        ),
        (
            get("hf://t/gguf", Some("v9"), &o).await,
            "has no revision `v9`",
        ),
        (
            get("hf://t/gguf:Q5_K_M", None, &o).await,
            "no GGUF file matches :Q5_K_M",
        ),
        (get("hf://t/gguf", None, &o).await, "several GGUF files"),
    ];
    for (result, want) in cases {
        let msg = result.unwrap_err().to_string();
        assert!(
            msg.contains(want) && !msg.contains('\n'),
            "want {want:?} in {msg:?}"
        );
    }
    // The right token opens the private and the gated repositories.
    let ok = get("hf://t/gated:Q4_1", None, &with("hf_good"))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&ok.path).unwrap(), noise(SIZE, 1));
    assert!(
        get("hf://t/private:Q8_0", None, &with("hf_good"))
            .await
            .is_ok()
    );
    // Nothing half-done was left behind by the failures.
    let leftovers: Vec<_> = walk(&cache)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".incomplete"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Local models: hub flags are refused, a missing path is named.
    let local = resolve(&model("/nonexistent/m.gguf"), &Request::default(), &o)
        .await
        .unwrap_err();
    assert_eq!(local.to_string(), "model not found: /nonexistent/m.gguf");
    let rev = resolve(
        &model("/nonexistent/m.gguf"),
        &Request {
            revision: Some("v1"),
            gguf_file: None,
        },
        &o,
    )
    .await
    .unwrap_err();
    assert!(
        rev.to_string()
            .starts_with("--revision applies to hub models"),
        "{rev}"
    );
    std::fs::remove_dir_all(&root).ok();
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

//! Which files of a repository to fetch, from its file list alone (pure).
//!
//! A GGUF repository holds one file per quantization: the file is picked by `--gguf-file`,
//! by a `:QUANT` tag matched in file names as llama.cpp's `-hf` does (`org/name:Q4_K_M`),
//! or — without either — the only GGUF, else `Q4_K_M` (llama.cpp's default). A
//! safetensors repository is fetched as a Hugging Face directory: config, tokenizer and
//! generation files plus the weights, the shards named by `model.safetensors.index.json`
//! when there is one. A PEFT adapter repository (`adapter_config.json` +
//! `adapter_model.safetensors`) is fetched as those two files.

/// Files of a Hugging Face directory besides the weights (those present are fetched).
pub const HF_DIR_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// A PEFT adapter repository's two files (a LoRA adapter for `--lora-modules`).
pub const ADAPTER_FILES: [&str; 2] = ["adapter_config.json", "adapter_model.safetensors"];

/// The weight index of sharded safetensors checkpoints.
pub const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";

/// llama.cpp's quantization when a GGUF repository is named without a tag.
pub const DEFAULT_QUANT: &str = "Q4_K_M";

/// What to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// One GGUF file (with its embedded tokenizer).
    Gguf(String),
    /// A Hugging Face directory: `files`, then the shards `index` names (if any).
    HfDir {
        files: Vec<String>,
        index: Option<String>,
    },
}

/// Chooses the files to fetch from `files` (the repository's paths at one revision).
///
/// # Errors
/// One sentence naming what is missing and what is there.
pub fn plan(
    files: &[String],
    quant: Option<&str>,
    gguf_file: Option<&str>,
) -> Result<Plan, String> {
    let ggufs: Vec<&String> = files
        .iter()
        .filter(|f| f.to_ascii_lowercase().ends_with(".gguf") && !f.contains("mmproj"))
        .collect();
    if let Some(wanted) = gguf_file {
        if quant.is_some() {
            return Err("give a :QUANT tag or --gguf-file, not both".into());
        }
        return match files.iter().find(|f| *f == wanted) {
            Some(f) => Ok(Plan::Gguf(f.clone())),
            None => Err(format!("no file {wanted}; GGUF files: {}", list(&ggufs))),
        };
    }
    if let Some(q) = quant {
        return pick_quant(&ggufs, q);
    }
    if ADAPTER_FILES.iter().all(|a| files.iter().any(|f| f == a)) {
        return Ok(Plan::HfDir {
            files: ADAPTER_FILES.map(str::to_owned).to_vec(),
            index: None,
        });
    }
    let root = |f: &&String| !f.contains('/');
    let has_config = files.iter().any(|f| f == "config.json");
    let weights: Vec<&String> = files
        .iter()
        .filter(root)
        .filter(|f| f.ends_with(".safetensors"))
        .collect();
    if has_config && !weights.is_empty() {
        let mut out: Vec<String> = HF_DIR_FILES
            .iter()
            .filter(|f| files.iter().any(|g| g == *f))
            .map(|f| (*f).to_owned())
            .collect();
        if files.iter().any(|f| f == SAFETENSORS_INDEX) {
            out.push(SAFETENSORS_INDEX.to_owned());
            return Ok(Plan::HfDir {
                files: out,
                index: Some(SAFETENSORS_INDEX.to_owned()),
            });
        }
        // Mistral-style repos carry `consolidated.safetensors` beside the HF weights.
        let hf_weights = weights.iter().filter(|w| !w.starts_with("consolidated"));
        let chosen: Vec<&&String> = if hf_weights.clone().next().is_some() {
            hf_weights.collect()
        } else {
            weights.iter().collect()
        };
        out.extend(chosen.into_iter().map(|w| (*w).clone()));
        return Ok(Plan::HfDir {
            files: out,
            index: None,
        });
    }
    match ggufs.as_slice() {
        [] => Err(format!(
            "neither config.json with *.safetensors nor a *.gguf file (files: {})",
            list(&files.iter().collect::<Vec<_>>())
        )),
        [one] => Ok(Plan::Gguf((*one).clone())),
        _ => pick_quant(&ggufs, DEFAULT_QUANT).map_err(|_| {
            format!(
                "several GGUF files; pick one with hf://org/name:QUANT or --gguf-file: {}",
                list(&ggufs)
            )
        }),
    }
}

/// The GGUF file whose name carries `quant` as a whole tag (`…-Q4_K_M.gguf`,
/// `….Q4_1.gguf`; `Q4_K` does not match `Q4_K_M`), case-insensitively.
fn pick_quant(ggufs: &[&String], quant: &str) -> Result<Plan, String> {
    let q = quant.to_ascii_lowercase();
    let matches: Vec<&&String> = ggufs
        .iter()
        .filter(|f| {
            let name = f.rsplit('/').next().unwrap_or(f).to_ascii_lowercase();
            name.match_indices(&q).any(|(i, _)| {
                let before = name[..i].chars().next_back();
                let after = &name[i + q.len()..];
                before.is_none_or(|c| matches!(c, '-' | '.' | '_'))
                    && (after == ".gguf" || after.starts_with(['-', '.']))
            })
        })
        .collect();
    match matches.as_slice() {
        [] => Err(format!(
            "no GGUF file matches :{quant}; GGUF files: {}",
            list(ggufs)
        )),
        [one] => {
            if is_split(one) {
                Err(format!(
                    "{one} is split into parts; split GGUF files are not supported yet"
                ))
            } else {
                Ok(Plan::Gguf((**one).clone()))
            }
        }
        many => Err(format!(
            ":{quant} matches several files{}: {}",
            if many.iter().any(|f| is_split(f)) {
                " (split GGUF files are not supported yet)"
            } else {
                "; pick one with --gguf-file"
            },
            list(&many.iter().map(|f| **f).collect::<Vec<_>>())
        )),
    }
}

/// `name-00001-of-00003.gguf`.
fn is_split(name: &str) -> bool {
    let stem = name.to_ascii_lowercase();
    let stem = stem.trim_end_matches(".gguf");
    stem.rsplit_once("-of-").is_some_and(|(head, total)| {
        total.len() == 5
            && total.bytes().all(|b| b.is_ascii_digit())
            && head
                .rsplit_once('-')
                .is_some_and(|(_, n)| n.len() == 5 && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The shard files a `model.safetensors.index.json` names (sorted, deduplicated).
///
/// # Errors
/// When the index is not JSON with a `weight_map` of file names.
pub fn shards_from_index(index_json: &str) -> Result<Vec<String>, String> {
    let v: serde_json::Value =
        serde_json::from_str(index_json).map_err(|e| format!("{SAFETENSORS_INDEX}: {e}"))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| format!("{SAFETENSORS_INDEX} has no weight_map"))?;
    let mut shards: Vec<String> = map
        .values()
        .map(|f| {
            f.as_str()
                .filter(|s| !s.contains("..") && !s.starts_with('/'))
                .map(str::to_owned)
                .ok_or_else(|| format!("{SAFETENSORS_INDEX}: bad shard name {f}"))
        })
        .collect::<Result<_, _>>()?;
    shards.sort();
    shards.dedup();
    Ok(shards)
}

fn list(files: &[&String]) -> String {
    if files.is_empty() {
        return "none".into();
    }
    files
        .iter()
        .map(|f| f.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn gguf(name: &str) -> Result<Plan, String> {
        Ok(Plan::Gguf(name.into()))
    }

    #[test]
    fn gguf_by_quant_tag_as_llama_cpp() {
        let repo = files(&[
            "README.md",
            "qwen2.5-0.5b-instruct-q4_k_m.gguf",
            "qwen2.5-0.5b-instruct-q4_k.gguf",
            "qwen2.5-0.5b-instruct-q8_0.gguf",
            "mmproj-q8_0.gguf",
        ]);
        assert_eq!(
            plan(&repo, Some("Q4_K_M"), None),
            gguf("qwen2.5-0.5b-instruct-q4_k_m.gguf")
        );
        assert_eq!(
            plan(&repo, Some("q4_k"), None),
            gguf("qwen2.5-0.5b-instruct-q4_k.gguf")
        );
        assert_eq!(
            plan(&repo, Some("Q8_0"), None),
            gguf("qwen2.5-0.5b-instruct-q8_0.gguf")
        );
        assert_eq!(
            plan(&repo, None, None),
            gguf("qwen2.5-0.5b-instruct-q4_k_m.gguf")
        );
        let e = plan(&repo, Some("Q5_K_M"), None).unwrap_err();
        assert!(
            e.contains(":Q5_K_M") && e.contains("q8_0.gguf") && !e.contains("mmproj"),
            "{e}"
        );
        assert_eq!(
            plan(
                &files(&["SmolLM2-135M-Instruct.Q4_1.gguf"]),
                Some("Q4_1"),
                None
            ),
            gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
        );
    }

    #[test]
    fn gguf_without_tag_and_explicit_file() {
        assert_eq!(
            plan(&files(&["a.Q4_1.gguf"]), None, None),
            gguf("a.Q4_1.gguf")
        );
        let two = files(&["a.Q4_1.gguf", "a.Q8_0.gguf"]);
        let e = plan(&two, None, None).unwrap_err();
        assert!(
            e.contains("several GGUF files") && e.contains("--gguf-file"),
            "{e}"
        );
        assert_eq!(plan(&two, None, Some("a.Q8_0.gguf")), gguf("a.Q8_0.gguf"));
        assert!(
            plan(&two, None, Some("b.gguf"))
                .unwrap_err()
                .contains("no file b.gguf")
        );
        assert!(plan(&two, Some("Q8_0"), Some("a.Q8_0.gguf")).is_err());
    }

    #[test]
    fn split_gguf_is_refused_clearly() {
        let repo = files(&[
            "m-Q4_K_M-00001-of-00002.gguf",
            "m-Q4_K_M-00002-of-00002.gguf",
        ]);
        let e = plan(&repo, Some("Q4_K_M"), None).unwrap_err();
        assert!(e.contains("split GGUF"), "{e}");
        assert!(is_split("m-00001-of-00002.gguf") && !is_split("m-Q4_K_M.gguf"));
    }

    #[test]
    fn adapter_repos_fetch_the_two_peft_files() {
        let repo = files(&[
            ".gitattributes",
            "README.md",
            "adapter_config.json",
            "adapter_model.safetensors",
            "training_args.bin",
        ]);
        assert_eq!(
            plan(&repo, None, None),
            Ok(Plan::HfDir {
                files: files(&["adapter_config.json", "adapter_model.safetensors"]),
                index: None
            })
        );
    }

    #[test]
    fn safetensors_repos_become_hf_directories() {
        let repo = files(&[
            ".gitattributes",
            "README.md",
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "onnx/model.onnx",
            "pytorch_model.bin",
            "tokenizer.json",
            "tokenizer_config.json",
            "runs/x.safetensors",
        ]);
        assert_eq!(
            plan(&repo, None, None),
            Ok(Plan::HfDir {
                files: files(&[
                    "config.json",
                    "generation_config.json",
                    "tokenizer.json",
                    "tokenizer_config.json",
                    "model.safetensors"
                ]),
                index: None
            })
        );
        let sharded = files(&[
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "consolidated.safetensors",
            "tokenizer.json",
        ]);
        assert_eq!(
            plan(&sharded, None, None),
            Ok(Plan::HfDir {
                files: files(&["config.json", "tokenizer.json", SAFETENSORS_INDEX]),
                index: Some(SAFETENSORS_INDEX.into())
            })
        );
        let mistral = files(&[
            "config.json",
            "consolidated.safetensors",
            "model.safetensors",
        ]);
        assert!(
            matches!(plan(&mistral, None, None), Ok(Plan::HfDir { files, .. }) if !files.contains(&"consolidated.safetensors".to_owned()))
        );
        let e = plan(&files(&["README.md"]), None, None).unwrap_err();
        assert!(e.contains("README.md"), "{e}");
    }

    #[test]
    fn shard_index() {
        let idx = r#"{"metadata":{},"weight_map":{"a":"model-00002-of-00002.safetensors","b":"model-00001-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}"#;
        assert_eq!(
            shards_from_index(idx).unwrap(),
            files(&[
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ])
        );
        assert!(shards_from_index("{}").is_err());
        assert!(shards_from_index(r#"{"weight_map":{"a":"../x"}}"#).is_err());
    }
}

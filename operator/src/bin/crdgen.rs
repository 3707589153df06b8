//! Generated files and rendered children.
//!
//! - `crdgen`: prints the InferenceDeployment CRD as YAML.
//! - `crdgen --write`: writes every generated file ([`candela_operator::generated::files`]:
//!   the CRD, RBAC, dashboards, rules and prometheus-adapter rules in `crds/`,
//!   `operator/rbac/`, `deploy/` and `charts/candela/`).
//! - `crdgen --check`: exits 1 naming every generated file that is missing or stale.
//! - `crdgen render FILE...`: prints, as one YAML stream, every child object the operator
//!   would apply for each InferenceDeployment in the files (multi-document YAML), with the
//!   operator's default settings. The chart tests validate these against the Kubernetes and
//!   third-party CRD schemas.
//! - `crdgen rules FILE...`: prints one Prometheus rules file with the rule groups of the
//!   PrometheusRule of each InferenceDeployment in the files (recording rules, alerts and,
//!   for the alerts backend, the scale-up alerts): for a Prometheus without
//!   prometheus-operator (`rule_files:`), e.g. `deploy/local/stack.sh`.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use candela_operator::builders::{self, BuildConfig};
use candela_operator::crd::InferenceDeployment;
use serde::Deserialize as _;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    match args.first().map(String::as_str) {
        None => print!("{}", candela_operator::crd::crd_yaml()?),
        Some("--write") => {
            for (path, text) in candela_operator::generated::files()? {
                let path = root.join(path);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&path, text).with_context(|| format!("{}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
        Some("--check") => {
            let mut stale = Vec::new();
            for (path, text) in candela_operator::generated::files()? {
                if std::fs::read_to_string(root.join(&path)).ok().as_deref() != Some(&text) {
                    stale.push(path);
                }
            }
            if !stale.is_empty() {
                bail!(
                    "stale generated files (run `cargo run -p candela-operator --bin crdgen -- --write`): {}",
                    stale.join(", ")
                );
            }
        }
        Some("render") if args.len() > 1 => {
            for children in build_all(&args[1..])? {
                for child in children_values(&children)? {
                    print!("---\n{}", serde_yaml_ng::to_string(&child)?);
                }
            }
        }
        Some("rules") if args.len() > 1 => {
            let mut groups = Vec::new();
            for children in build_all(&args[1..])? {
                if let Some(rule) = &children.prometheus_rule
                    && let Some(g) = rule.data["spec"]["groups"].as_array()
                {
                    groups.extend(g.iter().cloned());
                }
            }
            print!(
                "{}",
                serde_yaml_ng::to_string(&serde_json::json!({ "groups": groups }))?
            );
        }
        Some(other) => {
            bail!(
                "usage: crdgen [--write | --check | render FILE... | rules FILE...] (got {other})"
            )
        }
    }
    Ok(())
}

/// The children of every InferenceDeployment in `files` (multi-document YAML), built with
/// the operator's default settings.
fn build_all(files: &[String]) -> anyhow::Result<Vec<builders::Children>> {
    let mut all = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| file.clone())?;
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let mut infd = InferenceDeployment::deserialize(doc)
                .with_context(|| format!("{file}: not an InferenceDeployment"))?;
            // The builders need the server-set uid for owner references.
            infd.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
            all.push(
                builders::build(&infd, &BuildConfig::default()).with_context(|| file.clone())?,
            );
        }
    }
    Ok(all)
}

/// Each child as a complete object (apiVersion, kind, metadata, ...).
fn children_values(children: &builders::Children) -> anyhow::Result<Vec<serde_json::Value>> {
    use serde_json::to_value;
    let mut out = vec![
        typed(to_value(&children.deployment)?, "apps/v1", "Deployment"),
        typed(to_value(&children.service)?, "v1", "Service"),
    ];
    if let Some(hpa) = &children.hpa {
        out.push(typed(
            to_value(hpa)?,
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
        ));
    }
    for cm in [&children.dashboard_config_map, &children.lora_config_map]
        .into_iter()
        .flatten()
    {
        out.push(typed(to_value(cm)?, "v1", "ConfigMap"));
    }
    for obj in [
        &children.service_monitor,
        &children.prometheus_rule,
        &children.scaled_object,
        &children.grafana_dashboard,
    ]
    .into_iter()
    .flatten()
    .chain(&children.certificates)
    {
        out.push(to_value(obj)?);
    }
    Ok(out)
}

/// k8s-openapi structs serialize without apiVersion/kind when built with `..Default`.
fn typed(mut value: serde_json::Value, api_version: &str, kind: &str) -> serde_json::Value {
    value["apiVersion"] = api_version.into();
    value["kind"] = kind.into();
    value
}

//! Snapshot tests of the full child set for a few specs (`tests/data/specs/*.yaml` →
//! `tests/snapshots/*.yaml`). Review a changed snapshot, then accept it with
//! `UPDATE_SNAPSHOTS=1 cargo test -p candela-operator --test builders_snapshot`.

use std::path::{Path, PathBuf};

use candela_operator::builders::{self, BuildConfig};
use candela_operator::crd::InferenceDeployment;

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(sub)
}

/// Loads a spec and gives it the server-set fields the builders need.
fn load(name: &str) -> InferenceDeployment {
    let text =
        std::fs::read_to_string(dir("data/specs").join(format!("{name}.yaml"))).expect("spec file");
    let mut infd: InferenceDeployment = serde_yaml_ng::from_str(&text).expect("spec parses");
    infd.metadata.uid = Some(format!("00000000-0000-0000-0000-{:012}", name.len()));
    infd.metadata.generation = Some(1);
    infd
}

fn check(name: &str) {
    let children = builders::build(&load(name), &BuildConfig::default()).expect("children build");
    let actual = serde_yaml_ng::to_string(&children).expect("children serialize");
    let path = dir("snapshots").join(format!("{name}.yaml"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let first_diff = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b);
        panic!(
            "snapshot {} differs (first differing line: {:?}); review and rerun with UPDATE_SNAPSHOTS=1\n--- actual ---\n{actual}",
            path.display(),
            first_diff.map(|i| i + 1)
        );
    }
}

#[test]
fn minimal_hf_model() {
    check("minimal");
}

#[test]
fn full_spec_with_hpa() {
    check("hpa-full");
}

#[test]
fn cpu_model_with_keda_and_grafana_operator() {
    check("keda-cpu");
}

#[test]
fn monitoring_and_autoscaling_off() {
    check("monitoring-off");
}

#[test]
fn cpu_model_with_the_alerts_backend() {
    check("alerts-cpu");
}

#[test]
fn cpu_model_with_lora_adapters() {
    check("lora-cpu");
}

#[test]
fn tls_everywhere_with_a_secret_and_cert_manager() {
    check("tls");
}

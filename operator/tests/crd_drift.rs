//! Fails when generated files are stale: regenerate with
//! `cargo run -p candela-operator --bin crdgen -- --write`. The generated files are the CRD
//! (`crds/` and the chart's `crds/`), the RBAC (`operator/rbac/`, the chart's rules file),
//! the dashboards and rules in `deploy/` and the chart, and the prometheus-adapter rules.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn committed_generated_files_match_the_operator() {
    let files = candela_operator::generated::files().expect("generated files render");
    let stale: Vec<&str> = files
        .iter()
        .filter(|(path, text)| {
            std::fs::read_to_string(root().join(path)).ok().as_deref() != Some(text.as_str())
        })
        .map(|(path, _)| path.as_str())
        .collect();
    assert!(
        stale.is_empty(),
        "stale: {stale:?}: run `cargo run -p candela-operator --bin crdgen -- --write`"
    );
}

/// The chart's copies are byte-identical to the canonical files (one source of truth).
#[test]
fn chart_and_deploy_copies_are_identical() {
    let read = |p: &str| std::fs::read_to_string(root().join(p)).expect(p);
    assert_eq!(
        read("crds/inferencedeployment.yaml"),
        read("charts/candela/crds/inferencedeployment.yaml")
    );
    for (_, name) in candela_operator::generated::DASHBOARDS {
        assert_eq!(
            read(&format!("deploy/dashboards/{name}")),
            read(&format!("charts/candela/files/dashboards/{name}"))
        );
    }
}

/// The generated CRD and RBAC are exactly what the operator's types and rules produce.
#[test]
fn committed_crd_and_rbac_match_the_rust_types() {
    let read = |p: &str| std::fs::read_to_string(root().join(p)).unwrap_or_default();
    assert_eq!(
        read("crds/inferencedeployment.yaml"),
        candela_operator::crd::crd_yaml().expect("CRD serializes")
    );
    assert_eq!(
        read("operator/rbac/rbac.yaml"),
        candela_operator::rbac::rbac_yaml().expect("RBAC serializes")
    );
}

/// Every alert links a runbook section that exists in docs/runbooks.md.
#[test]
fn every_alert_has_a_runbook_section() {
    let runbooks =
        std::fs::read_to_string(root().join("docs/runbooks.md")).expect("docs/runbooks.md");
    let scale_up = candela_operator::alerts::SCALE_UP_ALERTS;
    for alert in candela_operator::builders::monitoring::ALERTS
        .iter()
        .chain(scale_up.iter())
    {
        assert!(
            runbooks.lines().any(|l| l == format!("## {alert}")),
            "docs/runbooks.md has no `## {alert}` section"
        );
    }
}

/// Every field of the schema has a description, so `kubectl explain` is useful.
#[test]
fn every_schema_field_is_documented() {
    use kube::CustomResourceExt;
    let crd =
        serde_json::to_value(candela_operator::crd::InferenceDeployment::crd()).expect("CRD json");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut undocumented = Vec::new();
    walk(schema, "", &mut undocumented);
    assert!(
        undocumented.is_empty(),
        "fields without a description: {undocumented:#?}"
    );
}

fn walk(schema: &serde_json::Value, path: &str, undocumented: &mut Vec<String>) {
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    for (name, sub) in props {
        let here = format!("{path}.{name}");
        // apiVersion/kind/metadata are documented by Kubernetes itself.
        let builtin =
            path.is_empty() && matches!(name.as_str(), "apiVersion" | "kind" | "metadata");
        if !builtin && sub["description"].as_str().is_none_or(str::is_empty) {
            undocumented.push(here.clone());
        }
        walk(sub, &here, undocumented);
        walk(&sub["items"], &format!("{here}[]"), undocumented);
    }
}

/// The chart's default images are the ones `scripts/build-images.sh` builds, as the
/// operator's own default is (`candela_contract::images`).
#[test]
fn chart_defaults_are_the_images_the_build_produces() {
    let text = std::fs::read_to_string(root().join("charts/candela/values.yaml")).unwrap();
    let values: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let operator = format!(
        "{}:{}",
        values["image"]["repository"].as_str().unwrap(),
        values["image"]["tag"].as_str().unwrap()
    );
    assert_eq!(operator, candela_contract::images::OPERATOR);
    assert_eq!(
        values["operator"]["engineImage"].as_str(),
        Some(candela_contract::images::ENGINE)
    );
    let script = std::fs::read_to_string(root().join("scripts/build-images.sh")).unwrap();
    for image in [
        candela_contract::images::ENGINE,
        candela_contract::images::OPERATOR,
    ] {
        let (name, tag) = image.split_once(':').unwrap();
        assert!(
            script.contains(&format!("{name}:${{TAG:-{tag}}}")),
            "scripts/build-images.sh does not build {image}"
        );
    }
}

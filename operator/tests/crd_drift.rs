//! Fails when generated files are stale: regenerate with
//! `cargo run -p candela-operator --bin crdgen -- --write`.

use std::path::Path;

fn assert_fresh(relative: &str, generated: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: run `cargo run -p candela-operator --bin crdgen -- --write`",
        path.display()
    );
}

#[test]
fn committed_crd_matches_the_rust_types() {
    assert_fresh(
        "../crds/inferencedeployment.yaml",
        &candela_operator::crd::crd_yaml().expect("CRD serializes"),
    );
}

#[test]
fn committed_rbac_matches_the_rust_rules() {
    assert_fresh(
        "rbac/rbac.yaml",
        &candela_operator::rbac::rbac_yaml().expect("RBAC serializes"),
    );
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

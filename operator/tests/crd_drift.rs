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

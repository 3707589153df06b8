//! Fails when `crds/` is stale: regenerate with
//! `cargo run -p candela-operator --bin crdgen -- --write`.

use std::path::Path;

#[test]
fn committed_crd_matches_the_rust_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/inferencedeployment.yaml");
    let committed = std::fs::read_to_string(&path).expect("crds/inferencedeployment.yaml exists");
    let generated = candela_operator::crd::crd_yaml().expect("the CRD serializes");
    assert!(
        committed == generated,
        "{} is stale: run `cargo run -p candela-operator --bin crdgen -- --write`",
        path.display()
    );
}

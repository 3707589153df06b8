//! Image names: what `scripts/build-images.sh` produces and what the operator and the Helm
//! chart use when not pointed at a registry (a chart test checks `values.yaml` against
//! these). `localhost/` names never resolve to a registry, so a node runs exactly the image
//! that was built and imported.

/// The engine image (`candela serve` and `candela sidecar`).
pub const ENGINE: &str = "localhost/candela:dev";
/// The operator image.
pub const OPERATOR: &str = "localhost/candela-operator:dev";

//! Prints the InferenceDeployment CRD as YAML (`cargo run -p candela-operator --bin crdgen
//! > crds/inferencedeployment.yaml`), or writes it with `--write`.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let yaml = candela_operator::crd::crd_yaml()?;
    if std::env::args().nth(1).as_deref() == Some("--write") {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds/inferencedeployment.yaml");
        std::fs::write(&path, yaml)?;
        eprintln!("wrote {}", path.display());
    } else {
        print!("{yaml}");
    }
    Ok(())
}

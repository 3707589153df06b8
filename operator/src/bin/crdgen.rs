//! Prints the InferenceDeployment CRD as YAML, or with `--write` writes the generated
//! files: `crds/inferencedeployment.yaml` and `operator/rbac/rbac.yaml`.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let crd = candela_operator::crd::crd_yaml()?;
    if std::env::args().nth(1).as_deref() != Some("--write") {
        print!("{crd}");
        return Ok(());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let files = [
        (root.join("../crds/inferencedeployment.yaml"), crd),
        (
            root.join("rbac/rbac.yaml"),
            candela_operator::rbac::rbac_yaml()?,
        ),
    ];
    for (path, text) in files {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, text)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

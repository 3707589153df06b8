//! `candela plan` (being built).

use clap::Args;

/// `candela plan` flags.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {}

/// Run `candela plan`.
pub fn run(_args: PlanArgs) -> crate::error::Result<()> {
    Err(crate::Error::InvalidArgs("candela plan is not built yet".into()))
}

//! `candela doctor` (being built).

use clap::Args;

/// `candela doctor` flags.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {}

/// Run `candela doctor`.
pub async fn run(_args: DoctorArgs) -> crate::error::Result<()> {
    Err(crate::Error::InvalidArgs("candela doctor is not built yet".into()))
}

//! Wiring of the controllers (`outbound run`).

/// Options of `outbound run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {}

/// Runs the controllers until stopped.
pub async fn run(_args: RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("the controller is not built yet")
}

//! The data plane: split reader, multipart engine, resume, progress, manifest.

/// Options of `outbound upload`.
#[derive(clap::Args, Debug)]
pub struct UploadArgs {}

/// Options of `outbound plan`.
#[derive(clap::Args, Debug)]
pub struct PlanArgs {}

/// Runs `outbound upload`.
pub async fn run_upload(_args: UploadArgs) -> anyhow::Result<()> {
    anyhow::bail!("the uploader is not built yet")
}

/// Runs `outbound plan`.
pub async fn run_plan(_args: PlanArgs) -> anyhow::Result<()> {
    anyhow::bail!("the planner is not built yet")
}

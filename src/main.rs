//! The command line: run | upload | crd | plan; nothing else.

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "outbound",
    version,
    about = "Delivers data files into S3 buckets from Kubernetes"
)]
struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "OUTBOUND_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers (the operator).
    Run(outbound::controller::RunArgs),
    /// Upload a source folder to a destination (the data plane; what each upload Job runs).
    Upload(Box<outbound::upload::UploadArgs>),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Print which objects, keys, sizes and part sizes a source would become, without uploading.
    Plan(outbound::upload::PlanArgs),
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OUTBOUND_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: a pipe, a file or a log collector gets plain text,
    // and so does anyone who sets NO_COLOR (https://no-color.org).
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // The uploader sizes its own I/O pool (--io-threads); the controller takes tokio's default.
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Command::Upload(args) = &cli.command
        && let Some(threads) = args.io_threads
    {
        runtime.worker_threads(threads.into());
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => outbound::controller::run(args).await,
            Command::Upload(args) => outbound::upload::run_upload(*args).await,
            Command::Crd => {
                print!("{}", outbound::api::crds_yaml());
                Ok(())
            }
            Command::Plan(args) => outbound::upload::run_plan(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            // An upload's error tells the Job whether another pod may heal it.
            match err.downcast_ref::<outbound::upload::error::UploadError>() {
                Some(upload) => std::process::ExitCode::from(upload.exit_code()),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}

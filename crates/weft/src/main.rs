//! The `weft` binary: the command-line interface to every weft component.
//! It parses arguments, sets up logging and hands over to the library
//! crates; `anyhow` errors stop here and are printed for the user.

#![forbid(unsafe_code)]

mod demo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// weft: the Kubernetes network data plane.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a seed scenario (veth, bridge, router, vxlan) in weft-demo-*
    /// namespaces, prove it with real pings, then remove it. Needs root.
    Demo(DemoArgs),
    /// Run the lab's workload server (like agnhost): HTTP /hostname,
    /// /clientip, /echo?msg=, /healthz, and TCP/UDP echo ports.
    Serve(weft_serve::ServeArgs),
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Scenario to build; all of them in turn when omitted.
    #[arg(value_enum)]
    scenario: Option<demo::Scenario>,
    /// Leave the namespaces in place to look around.
    #[arg(long, conflicts_with = "clean")]
    keep: bool,
    /// Only remove namespaces a previous `--keep` run left.
    #[arg(long)]
    clean: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("weft: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => {
            use clap::ValueEnum;
            let scenarios = match args.scenario {
                Some(one) => vec![one],
                None => demo::Scenario::value_variants().to_vec(),
            };
            let mut out = std::io::stdout().lock();
            for scenario in scenarios {
                if args.clean {
                    demo::clean(scenario)?;
                } else {
                    demo::run(scenario, args.keep, &mut out)?;
                }
            }
            Ok(())
        }
        Command::Serve(args) => Ok(weft_serve::run(&args)?),
    }
}

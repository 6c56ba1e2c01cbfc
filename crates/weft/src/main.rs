//! The `weft` binary: the command-line interface to every weft component.
//! It parses arguments, sets up logging and hands over to the library
//! crates; `anyhow` errors stop here and are printed for the user.

#![forbid(unsafe_code)]

mod cni_install;
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
    /// Run the cluster DNS server (Kubernetes DNS spec records, forwarding,
    /// hosts file, cache), fed by the lab's store (--store) or the API.
    Dns(weft_dns::DnsArgs),
    /// Run the ingress controller: networking.k8s.io/v1 Ingress over HTTP,
    /// HTTP/2 and TLS, straight to Service endpoints, fed by the lab's store
    /// (--store) or the API.
    Ingress(weft_ingress::IngressArgs),
    /// Run the node agent: pod network and Service proxy for this node, fed
    /// by the lab's store (--store) or the Kubernetes API.
    Agent(weft_agent::AgentArgs),
    /// CNI plugins: installing them. (The plugins themselves run when this
    /// binary is exec'ed as bridge, host-local, loopback or portmap, with or
    /// without a weft- prefix.)
    #[command(subcommand)]
    Cni(CniCommand),
    /// A multi-node cluster in network namespaces on this machine (up, down,
    /// status, check, exec, logs, diagram) and its object store (apply,
    /// delete, get).
    #[command(subcommand)]
    Lab(LabCommand),
}

/// Which lab, for every `weft lab` command that acts on a whole lab.
#[derive(Debug, Clone, clap::Args)]
struct LabName {
    /// Lab name (lowercase letters and digits): namespaces are weft-<name>-*.
    #[arg(long, default_value = "default")]
    name: String,
    /// Root of the labs' state directories: a lab's files, logs and store
    /// are in <STATE_ROOT>/<NAME> (its store, for `lab get` and friends, is
    /// <STATE_ROOT>/<NAME>/store).
    #[arg(long, value_name = "STATE_ROOT", default_value = weft_lab::layout::STATE_ROOT)]
    state_root: std::path::PathBuf,
}

impl LabName {
    fn layout(&self) -> anyhow::Result<weft_lab::Layout> {
        Ok(weft_lab::Layout::new(&self.state_root, &self.name)?)
    }
}

/// `weft lab …`: a multi-node cluster in network namespaces, and its object
/// store, managed like kubectl manages a cluster.
#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Build (or repair) the lab: LAN, external host, nodes with agents and
    /// kubelets, then apply manifests (a sample app by default). Needs root.
    Up {
        #[command(flatten)]
        lab: LabName,
        /// Number of nodes [default: the existing lab's, or 2].
        #[arg(long)]
        nodes: Option<u8>,
        /// Cross-node pod network: host-gw or vxlan [default: the existing
        /// lab's, or host-gw].
        #[arg(long)]
        mode: Option<String>,
        /// Manifests to apply instead of the sample app (file, dir or -).
        #[arg(short = 'f', long = "filename")]
        files: Vec<std::path::PathBuf>,
    },
    /// Remove everything the lab created: processes, namespaces, files.
    Down {
        #[command(flatten)]
        lab: LabName,
    },
    /// Nodes, pods and Services of the lab.
    Status {
        #[command(flatten)]
        lab: LabName,
    },
    /// Prove every network path with real requests; non-zero exit on failure.
    Check {
        #[command(flatten)]
        lab: LabName,
    },
    /// Run a command in a pod's network namespace, with its resolv.conf.
    Exec {
        #[command(flatten)]
        lab: LabName,
        /// Pod name.
        pod: String,
        /// Pod namespace.
        #[arg(short = 'n', long = "namespace", default_value = "default")]
        namespace: String,
        /// The command and its arguments (after --).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show a component's log: agent, kubelet, agent/node-2, or NAMESPACE/POD.
    Logs {
        #[command(flatten)]
        lab: LabName,
        /// agent, kubelet, agent/NODE, kubelet/NODE or NAMESPACE/POD.
        component: String,
    },
    /// Write an SVG picture of the lab's topology: LAN, nodes, bridges, pods
    /// with their IPs, Services.
    Diagram {
        #[command(flatten)]
        lab: LabName,
        /// Output file; standard output when absent.
        #[arg(short = 'o', long)]
        output: Option<std::path::PathBuf>,
    },
    /// The lab kubelet of one node (started by `lab up`).
    #[command(hide = true)]
    Kubelet {
        #[command(flatten)]
        lab: LabName,
        /// 1-based node index.
        #[arg(long)]
        node_index: u8,
    },
    /// Create or update objects from manifests (multi-document YAML or JSON).
    Apply(weft_cluster::cli::ApplyArgs),
    /// Delete the objects the manifests name.
    Delete(weft_cluster::cli::DeleteArgs),
    /// Show objects of a kind (pods, services, endpointslices, nodes, …).
    Get(weft_cluster::cli::GetArgs),
}

#[derive(Debug, Subcommand)]
enum CniCommand {
    /// Copy weft into a CNI bin directory and link the plugin names to it.
    Install(cni_install::InstallArgs),
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
    // Exec'ed as a CNI plugin: stdout carries only the plugin's JSON, so this
    // runs before logging and argument parsing.
    if let Some(plugin) = plugin_name_of_argv0() {
        let code = weft_cni::main_for(&plugin);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: lab components log into files.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // WEFT_LOG_FORMAT=json: one JSON object per line (access logs included).
    if std::env::var("WEFT_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("weft: {}", error_text(&err));
            ExitCode::FAILURE
        }
    }
}

/// `a: b: c` from an error and its causes, leaving out a cause whose text
/// is already part of the message (the Kubernetes client's errors repeat
/// their sources in their own text).
fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let message = cause.to_string();
        if text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

/// The plugin this process was exec'ed as, from the base name of argv[0].
fn plugin_name_of_argv0() -> Option<String> {
    let argv0 = std::env::args_os().next()?;
    let name = std::path::Path::new(&argv0)
        .file_name()?
        .to_str()?
        .to_owned();
    let plain = name.strip_prefix("weft-").unwrap_or(&name);
    weft_cni::PLUGIN_NAMES.contains(&plain).then_some(name)
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
        Command::Agent(args) => Ok(weft_agent::run(&args)?),
        Command::Dns(args) => Ok(weft_dns::run(&args)?),
        Command::Ingress(args) => Ok(weft_ingress::run(&args)?),
        Command::Lab(command) => {
            let mut out = std::io::stdout().lock();
            let mut stdin = std::io::stdin().lock();
            match command {
                LabCommand::Apply(args) => {
                    // Directories this apply makes for a new store go again
                    // when it fails: bad input changes nothing.
                    let made = args
                        .store
                        .store
                        .ancestors()
                        .take_while(|dir| !dir.exists())
                        .last()
                        .map(std::path::Path::to_path_buf);
                    let store = args.store.open()?;
                    let applied = weft_cluster::cli::apply(&store, &args, &mut stdin, &mut out);
                    if let (Err(_), Some(made)) = (&applied, &made) {
                        let _ = std::fs::remove_dir_all(made);
                    }
                    applied?;
                    // A lab's store: wait for Pods Ready and agents synced.
                    weft_lab::settle_store(&args.store.store, &mut out)?;
                }
                LabCommand::Delete(args) => {
                    let store = args.store.open_existing()?;
                    weft_cluster::cli::delete(&store, &args, &mut stdin, &mut out)?;
                    weft_lab::settle_store(&args.store.store, &mut out)?;
                }
                LabCommand::Get(args) => {
                    let store = args.store.open_existing()?;
                    weft_cluster::cli::get(&store, &args, &mut out)?;
                }
                LabCommand::Up {
                    lab,
                    nodes,
                    mode,
                    files,
                } => {
                    let exe = std::env::current_exe()?;
                    weft_lab::up(
                        &lab.layout()?,
                        nodes,
                        mode.as_deref(),
                        &files,
                        &exe,
                        &mut out,
                    )?;
                }
                LabCommand::Down { lab } => weft_lab::down(&lab.layout()?, &mut out)?,
                LabCommand::Status { lab } => weft_lab::status(&lab.layout()?, &mut out)?,
                LabCommand::Check { lab } => {
                    let rows = weft_lab::check::check(&lab.layout()?)?;
                    if !weft_lab::check::print(&rows, &mut out) {
                        anyhow::bail!("some paths failed");
                    }
                }
                LabCommand::Exec {
                    lab,
                    pod,
                    namespace,
                    command,
                } => {
                    weft_lab::exec::exec(&lab.layout()?, &namespace, &pod, &command)?;
                }
                LabCommand::Diagram { lab, output } => {
                    let svg =
                        weft_lab::diagram::render(&weft_lab::diagram::picture(&lab.layout()?)?);
                    match output {
                        Some(path) => std::fs::write(&path, svg)?,
                        None => {
                            use std::io::Write as _;
                            out.write_all(svg.as_bytes())?;
                        }
                    }
                }
                LabCommand::Logs { lab, component } => {
                    weft_lab::logs(&lab.layout()?, &component, &mut out)?
                }
                LabCommand::Kubelet { lab, node_index } => {
                    let exe = std::env::current_exe()?;
                    weft_lab::kubelet::Kubelet::new(lab.layout()?, node_index, exe)?.run()?;
                }
            }
            Ok(())
        }
        Command::Cni(CniCommand::Install(args)) => {
            cni_install::install(&args, &mut std::io::stdout().lock())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::error_text;

    /// An error that prints its source in its own text, as kube's do.
    #[derive(Debug)]
    struct Repeats(std::io::Error);

    impl std::fmt::Display for Repeats {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "failed to infer config: {}", self.0)
        }
    }

    impl std::error::Error for Repeats {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = anyhow::Error::new(Repeats(io)).context("cannot connect to the API");
        assert_eq!(
            error_text(&err),
            "cannot connect to the API: failed to infer config: no such file"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&plain), "outer: inner");
    }
}

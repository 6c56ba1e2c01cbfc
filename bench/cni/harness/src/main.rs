//! Times CNI ADD and DEL of one plugin chain the way a runtime (libcni)
//! runs it: each plugin of the chain exec'ed in turn with the `CNI_*`
//! environment and its configuration on stdin, the previous plugin's result
//! passed on as `prevResult`, DEL in reverse order with the ADD's final
//! result. It runs in the namespace it is started in (the script starts it
//! inside a throwaway `weft-bench-*` namespace standing in for the node) and
//! prints one `RESULT` line: median and p99 of ADD and DEL in microseconds.
//!
//! std only, on purpose: it must build without fetching anything.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Upper bound of `--cycles`, so that a typo cannot run for hours.
const MAX_CYCLES: usize = 10_000;
/// Cycles run first and not counted (bridge creation, page cache, ...).
const WARMUP: usize = 5;

/// What one run measures.
struct Options {
    /// Label printed in the `RESULT` line (`weft`, `reference`).
    label: String,
    /// Directory holding `bridge`, `host-local`, `portmap`.
    plugins: PathBuf,
    /// Container namespace path (`/run/netns/...`).
    netns: String,
    /// host-local data directory.
    data_dir: String,
    /// Chain `portmap` after `bridge`.
    portmap: bool,
    /// Counted cycles.
    cycles: usize,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        label: String::new(),
        plugins: PathBuf::new(),
        netns: String::new(),
        data_dir: String::new(),
        portmap: false,
        cycles: 200,
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--label" => options.label = value()?,
            "--plugins" => options.plugins = PathBuf::from(value()?),
            "--netns" => options.netns = value()?,
            "--data-dir" => options.data_dir = value()?,
            "--portmap" => options.portmap = true,
            "--cycles" => {
                options.cycles = value()?
                    .parse()
                    .map_err(|_| "--cycles needs a number".to_owned())?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.label.is_empty() || options.netns.is_empty() || options.data_dir.is_empty() {
        return Err("--label, --plugins, --netns and --data-dir are required".to_owned());
    }
    if !(1..=MAX_CYCLES).contains(&options.cycles) {
        return Err(format!("--cycles must be between 1 and {MAX_CYCLES}"));
    }
    Ok(options)
}

/// The chain's plugin configurations (the conflist's `plugins`, with the
/// list's `cniVersion` and `name` copied in as libcni does), and for
/// portmap the runtime's `portMappings`.
fn plugin_confs(options: &Options) -> Vec<(&'static str, String)> {
    let bridge = format!(
        r#"{{"cniVersion":"1.0.0","name":"bench","type":"bridge","bridge":"cni-bench0","isGateway":true,"isDefaultGateway":true,"hairpinMode":true,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.99.0.0/16"}}]],"dataDir":"{}"}}}}"#,
        options.data_dir
    );
    let mut confs = vec![("bridge", bridge)];
    if options.portmap {
        confs.push((
            "portmap",
            r#"{"cniVersion":"1.0.0","name":"bench","type":"portmap","capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}}"#
                .to_owned(),
        ));
    }
    confs
}

/// `conf` with `"prevResult": result` added (both are JSON objects).
fn with_prev_result(conf: &str, result: &str) -> String {
    let conf = conf.trim_end();
    let body = conf.strip_suffix('}').unwrap_or(conf);
    format!("{body},\"prevResult\":{}}}", result.trim())
}

/// Execs one plugin; returns its stdout, or the failure with everything it printed.
fn exec(
    options: &Options,
    plugin: &str,
    command: &str,
    container: &str,
    conf: &str,
) -> Result<String, String> {
    let mut child = Command::new(options.plugins.join(plugin))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", &options.netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &options.plugins)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("starting {plugin}: {err}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(conf.as_bytes())
            .map_err(|err| format!("writing {plugin}'s stdin: {err}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|err| format!("waiting for {plugin}: {err}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "{plugin} {command} {container} failed ({}): {stdout} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(stdout)
}

/// ADD through the chain; returns the final result.
fn add(options: &Options, confs: &[(&str, String)], container: &str) -> Result<String, String> {
    let mut result: Option<String> = None;
    for (plugin, conf) in confs {
        let conf = match &result {
            Some(prev) => with_prev_result(conf, prev),
            None => conf.clone(),
        };
        result = Some(exec(options, plugin, "ADD", container, &conf)?);
    }
    result.ok_or_else(|| "empty chain".to_owned())
}

/// DEL through the chain in reverse, each plugin given the ADD's result.
fn del(
    options: &Options,
    confs: &[(&str, String)],
    container: &str,
    result: &str,
) -> Result<(), String> {
    for (plugin, conf) in confs.iter().rev() {
        exec(
            options,
            plugin,
            "DEL",
            container,
            &with_prev_result(conf, result),
        )?;
    }
    Ok(())
}

/// The `q`-quantile (nearest rank) of sorted samples, in microseconds.
fn quantile(sorted: &[Duration], q: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_micros()
}

fn run(options: &Options) -> Result<(), String> {
    let confs = plugin_confs(options);
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    for cycle in 0..WARMUP + options.cycles {
        let container = format!("bench-{}-{cycle}", options.label);
        let started = Instant::now();
        let result = add(options, &confs, &container)?;
        let added = started.elapsed();
        let started = Instant::now();
        del(options, &confs, &container, &result)?;
        let deleted = started.elapsed();
        if cycle >= WARMUP {
            adds.push(added);
            dels.push(deleted);
        }
    }
    adds.sort();
    dels.sort();
    println!(
        "RESULT {} {} {} {} {} {}",
        options.label,
        if options.portmap {
            "bridge+host-local+portmap"
        } else {
            "bridge+host-local"
        },
        quantile(&adds, 0.5),
        quantile(&adds, 0.99),
        quantile(&dels, 0.5),
        quantile(&dels, 0.99),
    );
    Ok(())
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(err) => {
            eprintln!("weft-bench-cni: {err}");
            return ExitCode::from(2);
        }
    };
    if !Path::new(&options.netns).exists() {
        eprintln!("weft-bench-cni: {} does not exist", options.netns);
        return ExitCode::from(2);
    }
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("weft-bench-cni: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prev_result_is_spliced_into_the_plugin_conf() {
        assert_eq!(
            with_prev_result(r#"{"type":"portmap"}"#, "{\"ips\":[]}\n"),
            r#"{"type":"portmap","prevResult":{"ips":[]}}"#
        );
        assert_eq!(
            with_prev_result(r#"{"ipam":{"a":{}}}"#, "{}"),
            r#"{"ipam":{"a":{}},"prevResult":{}}"#
        );
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(quantile(&samples, 0.5), 50);
        assert_eq!(quantile(&samples, 0.99), 99);
        assert_eq!(quantile(&samples[..1], 0.99), 1);
    }
}

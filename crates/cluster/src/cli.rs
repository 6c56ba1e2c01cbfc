//! `weft lab apply|delete|get` as library functions with their clap
//! arguments, for the `weft` binary to wire in. They behave like kubectl's
//! commands of the same name against the embedded store: the same
//! messages (`service/web created`), the same tables, `-o yaml|json|wide`.

mod table;

pub use table::align as align_table;

use std::io::{Read, Write};
use std::path::PathBuf;

use crate::manifest::{self, ReadError};
use crate::model::{Kind, Object, ObjectKey};
use crate::store::{Action, Store, StoreError};

/// Where the store lives when neither `--store` nor `WEFT_STORE` says.
pub const DEFAULT_STORE: &str = "/var/lib/weft/lab/default/store";

/// The store a command acts on.
#[derive(Clone, Debug, clap::Args)]
pub struct StoreArgs {
    /// The lab's object store directory.
    #[arg(long = "store", value_name = "DIR", env = "WEFT_STORE", default_value = DEFAULT_STORE)]
    pub store: PathBuf,
}

impl StoreArgs {
    /// Opens the store, creating the directory if needed (`apply`).
    pub fn open(&self) -> Result<Store, StoreError> {
        Store::open(&self.store)
    }

    /// Opens the store, which must exist (`get`, `delete`): a mistyped
    /// `--store` is an error, not an empty store made on the spot.
    pub fn open_existing(&self) -> Result<Store, StoreError> {
        Store::open_existing(&self.store)
    }
}

/// `weft lab apply -f FILE|DIR|-`
#[derive(Clone, Debug, clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// A manifest, a directory of manifests (.yaml, .yml, .json) or `-` for
    /// standard input; repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    pub files: Vec<PathBuf>,
}

/// `weft lab delete -f FILE|DIR|-`
#[derive(Clone, Debug, clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// A manifest, a directory of manifests or `-`, naming what to delete;
    /// repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    pub files: Vec<PathBuf>,
    /// Succeed when an object named does not exist.
    #[arg(long)]
    pub ignore_not_found: bool,
}

/// Output formats of `get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
    /// The table with more columns.
    Wide,
}

/// `weft lab get KIND [NAME] [-n NS] [-A] [-o yaml|json|wide]`
#[derive(Clone, Debug, clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// pods (po), services (svc), endpointslices, nodes (no), namespaces
    /// (ns), ingresses (ing), ingressclasses, secrets.
    pub kind: String,
    /// One object's name; all objects of the kind when absent.
    pub name: Option<String>,
    /// The namespace (default: `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Output format; a table when absent.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<OutputFormat>,
}

/// An error of a `weft lab` command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The kind named on the command line is not one weft knows.
    #[error("the server doesn't have a resource type {0:?}")]
    UnknownKind(String),
    /// Objects named do not exist (`plural "name"` each).
    #[error("{}", .0.iter().map(|k| format!("{} {:?} not found", k.kind.plural(), k.name)).collect::<Vec<_>>().join("\n"))]
    NotFound(Vec<ObjectKey>),
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
    /// The manifests held no object (empty, only `---` or comments).
    #[error("no objects passed to {0}")]
    NoObjects(&'static str),
}

fn write_out(out: &mut dyn Write, text: &str) -> Result<(), CliError> {
    out.write_all(text.as_bytes()).map_err(CliError::Output)
}

/// `weft lab apply`: applies every manifest, all or nothing, and prints one
/// line per object (`service/web created|configured|unchanged`).
pub fn apply(
    store: &Store,
    args: &ApplyArgs,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let manifests = manifest::read_manifests(&args.files, stdin)?;
    let changes = store.apply(&manifests)?;
    if changes.is_empty() {
        return Err(CliError::NoObjects("apply"));
    }
    let mut text = String::new();
    for change in changes {
        let verb = match change.action {
            Action::Created => "created",
            Action::Configured => "configured",
            _ => "unchanged",
        };
        text.push_str(&format!(
            "{}/{} {verb}\n",
            change.key.kind.resource(),
            change.key.name
        ));
    }
    write_out(out, &text)
}

/// `weft lab delete`: deletes what the manifests name and prints
/// `service "web" deleted` per object; objects that do not exist are an
/// error after the others are deleted, unless `--ignore-not-found`.
pub fn delete(
    store: &Store,
    args: &DeleteArgs,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let manifests = manifest::read_manifests(&args.files, stdin)?;
    let changes = store.delete_manifests(&manifests)?;
    if changes.is_empty() {
        return Err(CliError::NoObjects("delete"));
    }
    let mut text = String::new();
    let mut missing = Vec::new();
    for change in changes {
        match change.action {
            Action::Deleted => text.push_str(&format!(
                "{} {:?} deleted\n",
                change.key.kind.resource(),
                change.key.name
            )),
            _ => missing.push(change.key),
        }
    }
    write_out(out, &text)?;
    if missing.is_empty() || args.ignore_not_found {
        Ok(())
    } else {
        Err(CliError::NotFound(missing))
    }
}

/// `weft lab get`: prints objects as a kubectl-like table, or as
/// Kubernetes YAML/JSON (one object for `get KIND NAME`, else a `List`).
pub fn get(store: &Store, args: &GetArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let kind =
        Kind::from_cli(&args.kind).ok_or_else(|| CliError::UnknownKind(args.kind.clone()))?;
    let namespace = args.namespace.as_deref().unwrap_or("default");
    let objects = match &args.name {
        Some(name) => {
            let key = ObjectKey::new(kind, namespace, name);
            match store.get(&key)? {
                Some(obj) => vec![obj],
                None => return Err(CliError::NotFound(vec![key])),
            }
        }
        None => store.list(kind, (!args.all_namespaces).then_some(namespace))?,
    };
    let single = args.name.is_some();
    let text = match args.output {
        Some(OutputFormat::Json) => {
            let value = as_document(&objects, single);
            let mut s = serde_json::to_string_pretty(&value).unwrap_or_default();
            s.push('\n');
            s
        }
        Some(OutputFormat::Yaml) => {
            serde_yaml_ng::to_string(&as_document(&objects, single)).unwrap_or_default()
        }
        Some(OutputFormat::Wide) | None => {
            if objects.is_empty() {
                if kind.namespaced() && !args.all_namespaces {
                    format!("No resources found in {namespace} namespace.\n")
                } else {
                    "No resources found\n".to_owned()
                }
            } else {
                let wide = args.output == Some(OutputFormat::Wide);
                let show_ns = args.all_namespaces && kind.namespaced();
                table::render(kind, &objects, wide, show_ns, jiff::Timestamp::now())
            }
        }
    };
    write_out(out, &text)
}

fn as_document(objects: &[Object], single: bool) -> serde_json::Value {
    match objects {
        [one] if single => one.to_json(),
        _ => serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": objects.iter().map(Object::to_json).collect::<Vec<_>>(),
            "metadata": {"resourceVersion": ""},
        }),
    }
}

#[cfg(test)]
mod tests;

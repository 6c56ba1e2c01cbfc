//! Reading Kubernetes manifests as kubectl does: files, directories (their
//! `.yaml`, `.yml` and `.json` files, in name order) or standard input;
//! multi-document YAML; `kind: List`; `metadata.namespace` defaulting to
//! `default` for namespaced kinds. Every problem is an [`Invalid`] naming the
//! file, the document (1-based) and the field.
//!
//! Semantic checks against the store (ports, addresses, selectors) live in
//! `store::validate`; this module only turns text into typed objects.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::model::{Kind, Object, ObjectKey};

mod strict;

/// One manifest's text and where it came from (a path, or `-` for stdin).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub origin: String,
    pub text: String,
}

/// One object read from a manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The manifest's origin.
    pub file: String,
    /// 1-based position of the YAML document in the file.
    pub index: usize,
    pub object: Object,
}

/// Why one document of a manifest cannot be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The manifest's origin.
    pub file: String,
    /// 1-based position of the YAML document in the file.
    pub document: usize,
    /// The object, when its kind and name could be read.
    pub object: Option<ObjectKey>,
    /// Dotted path of the offending field, e.g. `spec.ports[0].nodePort`.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for Invalid {
    /// `web.yaml: document 2 (Service default/web): spec.ports[0].port: …`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file, self.document)?;
        if let Some(key) = &self.object {
            write!(f, " ({key})")?;
        }
        write!(f, ": {}: {}", self.field, self.reason)
    }
}

/// A manifest could not be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} has no .yaml, .yml or .json file")]
    EmptyDir(PathBuf),
}

/// Reads `-f` arguments: a file, every manifest file of a directory (not
/// recursive), or `-` for `stdin`.
pub fn read_manifests(paths: &[PathBuf], stdin: &mut dyn Read) -> Result<Vec<Manifest>, ReadError> {
    let mut out = Vec::new();
    for path in paths {
        if path == Path::new("-") {
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(|source| ReadError::Io {
                    path: path.clone(),
                    source,
                })?;
            out.push(Manifest {
                origin: "-".to_owned(),
                text,
            });
            continue;
        }
        let io = |source| ReadError::Io {
            path: path.clone(),
            source,
        };
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(io)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(
                            p.extension().and_then(|e| e.to_str()),
                            Some("yaml" | "yml" | "json")
                        )
                })
                .collect();
            if files.is_empty() {
                return Err(ReadError::EmptyDir(path.clone()));
            }
            files.sort();
            for file in files {
                let text = std::fs::read_to_string(&file).map_err(|source| ReadError::Io {
                    path: file.clone(),
                    source,
                })?;
                out.push(Manifest {
                    origin: file.display().to_string(),
                    text,
                });
            }
        } else {
            let text = std::fs::read_to_string(path).map_err(io)?;
            out.push(Manifest {
                origin: path.display().to_string(),
                text,
            });
        }
    }
    Ok(out)
}

/// Parses every document of a manifest. Returns the objects read and the
/// problems found; empty documents are skipped but still counted.
pub fn parse(manifest: &Manifest) -> (Vec<Document>, Vec<Invalid>) {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(&manifest.text).enumerate() {
        let index = i + 1;
        let invalid = |field: &str, reason: String| Invalid {
            file: manifest.origin.clone(),
            document: index,
            object: None,
            field: field.to_owned(),
            reason,
        };
        let value = match strict::document(de) {
            Ok(read) if read.given_twice.is_empty() => read.value,
            Ok(read) => {
                // Refused as kubectl refuses it; the documents after it are
                // still checked.
                for path in read.given_twice {
                    errors.push(invalid(&path, "given twice in one mapping".to_owned()));
                }
                continue;
            }
            Err(error) => {
                // The YAML stream cannot be resumed after a syntax error.
                errors.push(invalid("(document)", format!("not valid YAML: {error}")));
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        let is_list = value.get("kind").and_then(|k| k.as_str()) == Some("List");
        if is_list {
            let items = value
                .get("items")
                .and_then(|i| i.as_array())
                .cloned()
                .unwrap_or_default();
            for (j, item) in items.into_iter().enumerate() {
                match object_from_value(item) {
                    Ok(object) => docs.push(Document {
                        file: manifest.origin.clone(),
                        index,
                        object,
                    }),
                    Err((key, field, reason)) => errors.push(Invalid {
                        object: key,
                        ..invalid(&format!("items[{j}].{field}"), reason)
                    }),
                }
            }
            continue;
        }
        match object_from_value(value) {
            Ok(object) => docs.push(Document {
                file: manifest.origin.clone(),
                index,
                object,
            }),
            Err((key, field, reason)) => errors.push(Invalid {
                object: key,
                ..invalid(&field, reason)
            }),
        }
    }
    (docs, errors)
}

/// A document's field that is wrong and why, with the object when its kind
/// and name could be read.
type DocError = (Option<ObjectKey>, String, String);

fn object_from_value(mut value: serde_json::Value) -> Result<Object, DocError> {
    let err = |field: &str, reason: &str| (None, field.to_owned(), reason.to_owned());
    let Some(map) = value.as_object_mut() else {
        return Err(err("(document)", "is not a mapping"));
    };
    let kind_name = text_of(map, "kind");
    let api_version = text_of(map, "apiVersion");
    if kind_name.is_empty() {
        return Err(err("kind", "is required"));
    }
    if api_version.is_empty() {
        return Err(err("apiVersion", "is required"));
    }
    let Some(kind) = Kind::from_type_meta(&api_version, &kind_name) else {
        if let Some(k) = Kind::ALL.into_iter().find(|k| k.name() == kind_name) {
            return Err((
                None,
                "apiVersion".to_owned(),
                format!(
                    "{kind_name} is served as {}, not {api_version}",
                    k.api_version()
                ),
            ));
        }
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        return Err((
            None,
            "kind".to_owned(),
            format!(
                "unknown kind {kind_name:?} ({api_version}); weft knows {}",
                known.join(", ")
            ),
        ));
    };
    let meta = map
        .entry("metadata")
        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return Err(err("metadata", "is not a mapping"));
    };
    if meta
        .get("name")
        .and_then(|n| n.as_str())
        .is_none_or(str::is_empty)
    {
        return Err(err("metadata.name", "is required"));
    }
    if kind.namespaced() {
        if meta
            .get("namespace")
            .and_then(|n| n.as_str())
            .is_none_or(str::is_empty)
        {
            meta.insert("namespace".to_owned(), "default".into());
        }
    } else {
        meta.remove("namespace");
    }
    let key = ObjectKey::new(kind, &text_of(meta, "namespace"), &text_of(meta, "name"));
    let object = Object::from_json(kind, value.clone()).map_err(|e| {
        let path = e.path().to_string();
        (Some(key.clone()), path, e.into_inner().to_string())
    })?;
    // Strict, as `kubectl apply` is by default: a field the kind does not
    // have (a typo such as `tragetPort`) is an error, not dropped.
    if let Some(field) = unknown_field(&value, &object.to_json(), &strict::Path::ROOT) {
        return Err((Some(key), field, "unknown field".to_owned()));
    }
    Ok(object)
}

/// The string at `key` of a mapping; empty when absent or not a string.
fn text_of(map: &serde_json::Map<String, serde_json::Value>, key: &str) -> String {
    map.get(key)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The first field of `input` (a document as written) that is not in
/// `decoded` (the same document read into its kind and written back), as a
/// dotted path; null values count as absent, as a decoder takes them.
fn unknown_field(
    input: &serde_json::Value,
    decoded: &serde_json::Value,
    at: &strict::Path<'_>,
) -> Option<String> {
    use serde_json::Value;
    match (input, decoded) {
        (Value::Object(written), Value::Object(read)) => written.iter().find_map(|(key, value)| {
            let field = at.key(key);
            match read.get(key) {
                None if !value.is_null() => Some(field.to_string()),
                None => None,
                Some(read) => unknown_field(value, read, &field),
            }
        }),
        (Value::Array(written), Value::Array(read)) if written.len() == read.len() => written
            .iter()
            .zip(read)
            .enumerate()
            .find_map(|(i, (value, read))| unknown_field(value, read, &at.index(i))),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

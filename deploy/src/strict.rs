//! Deserialising with unknown fields rejected.
//!
//! k8s-openapi's types skip fields they do not know (as the API server does by default),
//! so a misspelt `hostNetwrok: true` would parse and silently do nothing. Every
//! deserialisation here runs through `serde_ignored`, which reports each skipped field,
//! and `serde_path_to_error`, which names the field a type error is in.

use serde::Deserialize;

use crate::ManifestError;

/// Deserialises `T` from `de`, failing on the first type error (naming its path) or on
/// any field that `T` does not know (naming all of them).
pub fn deserialize_strict<'de, D, T>(origin: &str, de: D) -> Result<T, ManifestError>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let mut unknown = Vec::new();
    let mut track = |path: serde_ignored::Path<'_>| unknown.push(dotted(&path));
    let tracked = serde_ignored::Deserializer::new(de, &mut track);
    let value: T =
        serde_path_to_error::deserialize(tracked).map_err(|e| ManifestError::Invalid {
            origin: origin.to_owned(),
            field: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
    if unknown.is_empty() {
        Ok(value)
    } else {
        Err(ManifestError::UnknownFields {
            origin: origin.to_owned(),
            fields: unknown,
        })
    }
}

/// [`deserialize_strict`] over JSON text (configs embedded in ConfigMaps and
/// NetworkAttachmentDefinitions).
pub fn from_json_strict<T>(origin: &str, text: &str) -> Result<T, ManifestError>
where
    T: for<'de> Deserialize<'de>,
{
    let mut de = serde_json::Deserializer::from_str(text);
    let value = deserialize_strict(origin, &mut de)?;
    de.end().map_err(|e| ManifestError::Syntax {
        origin: origin.to_owned(),
        format: "JSON",
        message: e.to_string(),
    })?;
    Ok(value)
}

/// `spec.template.spec.containers.0.name`: serde_ignored's path without its `?` markers
/// for `Option` and newtype layers, which say nothing to a reader of YAML.
fn dotted(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => join(dotted(parent), &index.to_string()),
        Path::Map { parent, key } => join(dotted(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => dotted(parent),
    }
}

fn join(parent: String, segment: &str) -> String {
    if parent.is_empty() {
        segment.to_owned()
    } else {
        format!("{parent}.{segment}")
    }
}

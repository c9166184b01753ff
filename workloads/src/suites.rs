//! The builtin workloads, embedded from `suites/` so that the `faultline` binary runs them from
//! any directory, and name-or-path resolution (the GUIDE's contract: a workload is addressed as
//! `register` or as `workloads/suites/register.yaml`).

use std::path::Path;

use crate::error::WorkloadError;
use crate::schema::Workload;

/// (name, YAML text) of each builtin, in the order they are listed to users.
const BUILTINS: [(&str, &str); 11] = [
    ("register", include_str!("../suites/register.yaml")),
    ("causal", include_str!("../suites/causal.yaml")),
    ("set", include_str!("../suites/set.yaml")),
    ("hotspot", include_str!("../suites/hotspot.yaml")),
    ("causal-store", include_str!("../suites/causal-store.yaml")),
    ("list-append", include_str!("../suites/list-append.yaml")),
    ("rw-register", include_str!("../suites/rw-register.yaml")),
    ("bank", include_str!("../suites/bank.yaml")),
    ("lock", include_str!("../suites/lock.yaml")),
    ("watch", include_str!("../suites/watch.yaml")),
    ("membership", include_str!("../suites/membership.yaml")),
];

/// The names of the builtin workloads.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|(name, _)| *name)
}

/// The YAML text of a builtin workload.
pub fn builtin(name: &str) -> Option<&'static str> {
    BUILTINS
        .iter()
        .find(|(builtin, _)| *builtin == name)
        .map(|(_, text)| *text)
}

/// Loads a builtin by name, else the file at that path. A builtin wins over a file of the same
/// name in the current directory, so `register` means the same thing wherever it is run.
pub fn resolve(name_or_path: &str) -> Result<Workload, WorkloadError> {
    if let Some(text) = builtin(name_or_path) {
        // Errors in a builtin name the file it was embedded from.
        return Workload::from_yaml(text, &format!("workloads/suites/{name_or_path}.yaml"));
    }
    let path = Path::new(name_or_path);
    let looks_like_path = name_or_path.contains(['/', '\\'])
        || path.extension().is_some_and(|e| e == "yaml" || e == "yml");
    if path.exists() || looks_like_path {
        // A path-like argument that does not exist gets the OS error, which names the path.
        return Workload::from_path(path);
    }
    Err(WorkloadError::Unknown {
        name: name_or_path.to_owned(),
        builtins: builtin_names().collect::<Vec<_>>().join(", "),
    })
}

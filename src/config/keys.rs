//! Which settings exist, and the refusal of any other: a key of the config file or a
//! `CHAT_GATEWAY_*` environment variable that names no setting stops the start, with the
//! nearest valid name suggested. The compiled-in defaults list every setting, so they are the
//! one source of the valid names.

use std::collections::BTreeSet;
use std::path::Path;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Value};
use figment::Provider;

use super::{ConfigError, DEFAULTS};

/// Prefix of the environment variables that set a setting.
pub const ENV_PREFIX: &str = "CHAT_GATEWAY_";

/// Variables with the prefix that are not settings: the config file's name, and the names
/// the project's scripts and tests read (`CHAT_GATEWAY_BIN`, `CHAT_GATEWAY_TEST_*`), never
/// the gateway.
fn is_exempt(rest: &str) -> bool {
    rest == "CONFIG" || rest == "BIN" || rest.starts_with("TEST_")
}

/// The dotted names of every setting (`public_addr`, `limits.max_connections`, ...) and of
/// the sections holding them (`limits`).
#[derive(Clone)]
pub struct Keys {
    leaves: BTreeSet<String>,
    sections: BTreeSet<String>,
}

impl Keys {
    /// The settings the compiled-in defaults define.
    pub fn known() -> Self {
        let data = Toml::string(DEFAULTS)
            .data()
            .expect("compiled-in defaults parse");
        let mut keys = Self {
            leaves: BTreeSet::new(),
            sections: BTreeSet::new(),
        };
        for dict in data.values() {
            keys.collect(dict, "");
        }
        keys
    }

    fn collect(&mut self, dict: &Dict, prefix: &str) {
        for (name, value) in dict {
            let path = join(prefix, name);
            match value {
                Value::Dict(_, inner) => {
                    self.collect(inner, &path);
                    self.sections.insert(path);
                }
                _ => {
                    self.leaves.insert(path);
                }
            }
        }
    }

    /// Whether `path` names a setting.
    pub fn is_setting(&self, path: &str) -> bool {
        self.leaves.contains(path)
    }

    /// Every setting, dotted.
    pub fn settings(&self) -> impl Iterator<Item = &str> {
        self.leaves.iter().map(String::as_str)
    }

    /// The setting most like `path`, if one is close enough to be a likely typo: the same
    /// name in another section, or a few edits away.
    pub fn nearest(&self, path: &str) -> Option<&str> {
        let last = |p: &str| p.rsplit('.').next().unwrap_or(p).to_owned();
        let (unknown_last, mut best) = (last(path), None::<(usize, &str)>);
        for known in self.settings() {
            let whole = edit_distance(path, known);
            // A setting in the wrong section (or at the top level) is one edit away.
            let moved = edit_distance(&unknown_last, &last(known)) + 1;
            let d = whole.min(moved);
            if best.is_none_or(|(b, _)| d < b) {
                best = Some((d, known));
            }
        }
        let (d, known) = best?;
        (d <= 2.max(path.chars().count() / 3)).then_some(known)
    }

    /// Keys of the config file at `path` that name no setting, with the nearest valid name.
    pub fn check_file(&self, path: &Path) -> Result<(), ConfigError> {
        let data = Toml::file(path)
            .data()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        let mut found = Vec::new();
        for dict in data.values() {
            self.unknown_in(dict, "", &mut found);
        }
        let file = path.display();
        let problems = found
            .into_iter()
            .map(|key| {
                let hint = match self.nearest(&key) {
                    Some(near) => format!("did you mean `{near}`?"),
                    None => "it names no setting".into(),
                };
                format!("unknown key `{key}` in the config file {file}: {hint}")
            })
            .collect();
        refuse(problems)
    }

    fn unknown_in(&self, dict: &Dict, prefix: &str, found: &mut Vec<String>) {
        for (name, value) in dict {
            let path = join(prefix, name);
            match value {
                // Known sections, and unknown ones (`[limit]`) so that each key in them is
                // reported with the setting it most likely means.
                Value::Dict(_, inner) if !self.leaves.contains(&path) && !inner.is_empty() => {
                    self.unknown_in(inner, &path, found)
                }
                // A section given a plain value is a type error, reported as such later.
                _ if self.leaves.contains(&path) || self.sections.contains(&path) => {}
                _ => found.push(path),
            }
        }
    }

    /// `CHAT_GATEWAY_*` variables among `vars` that name no setting (a single underscore
    /// where nesting needs a double one, a typo), with the nearest valid name.
    pub fn check_env(&self, vars: impl Iterator<Item = String>) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        for name in vars {
            let upper = name.to_ascii_uppercase();
            let Some(rest) = upper.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if is_exempt(rest) {
                continue;
            }
            let path = rest.to_ascii_lowercase().replace("__", ".");
            if self.leaves.contains(&path) {
                continue;
            }
            let hint = if self.sections.contains(&path) {
                format!(
                    "`{path}` is a section: set one of its keys, as in {}",
                    env_name(self.settings().find(|s| s.starts_with(&path)).unwrap_or(""))
                )
            } else {
                match self.nearest(&path) {
                    Some(near) => format!("did you mean {}?", env_name(near)),
                    None => "it names no setting".into(),
                }
            };
            problems.push(format!("unknown environment variable {name}: {hint}"));
        }
        refuse(problems)
    }
}

/// Problems found, as one error that lists them all.
fn refuse(problems: Vec<String>) -> Result<(), ConfigError> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(ConfigError::Unknown(format!(
        "{}\n`chat-gateway --help` lists every setting with its environment variable",
        problems.join("\n")
    )))
}

/// The environment variable of a dotted setting: `limits.max_connections` →
/// `CHAT_GATEWAY_LIMITS__MAX_CONNECTIONS`.
pub fn env_name(path: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        path.replace('.', "__").to_ascii_uppercase()
    )
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_the_nearest_setting() {
        let keys = Keys::known();
        assert_eq!(keys.nearest("public_adr"), Some("public_addr"));
        assert_eq!(
            keys.nearest("limits.max_conections"),
            Some("limits.max_connections")
        );
        assert_eq!(
            keys.nearest("limits_max_connections_per_user"),
            Some("limits.max_connections_per_user")
        );
        assert_eq!(
            keys.nearest("max_connections"),
            Some("limits.max_connections")
        );
        assert_eq!(keys.nearest("completely_unrelated_words"), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn environment_names_are_checked_and_non_settings_let_through() {
        let keys = Keys::known();
        let check = |names: &[&str]| {
            keys.check_env(names.iter().map(|s| s.to_string()))
                .map_err(|e| e.to_string())
        };
        check(&[
            "CHAT_GATEWAY_PUBLIC_ADDR",
            "CHAT_GATEWAY_LIMITS__MAX_CONNECTIONS",
            "CHAT_GATEWAY_STORE__POSTGRES_URL",
            "CHAT_GATEWAY_CONFIG",
            "CHAT_GATEWAY_BIN",
            "CHAT_GATEWAY_TEST_PG_URL",
            "CHAT_GATEWAY_LOG",
            "PATH",
        ])
        .unwrap();
        let err = check(&["CHAT_GATEWAY_PUBLIC_ADRR", "CHAT_GATEWAY_STORE_KIND"]).unwrap_err();
        assert!(
            err.contains("CHAT_GATEWAY_PUBLIC_ADRR: did you mean CHAT_GATEWAY_PUBLIC_ADDR?"),
            "{err}"
        );
        assert!(
            err.contains("CHAT_GATEWAY_STORE_KIND: did you mean CHAT_GATEWAY_STORE__KIND?"),
            "{err}"
        );
        let err = check(&["CHAT_GATEWAY_LIMITS"]).unwrap_err();
        assert!(err.contains("is a section"), "{err}");
    }
}

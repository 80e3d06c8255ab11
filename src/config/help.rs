//! The settings part of `--help`, written from the commented defaults: every setting with
//! its environment variable, its default and the comment that documents it, so the help
//! cannot drift from the defaults.

use super::keys::env_name;
use super::DEFAULTS;

/// One setting as the defaults file documents it.
struct Setting {
    path: String,
    default: String,
}

/// The settings of `config/default.toml` in order, each group with the comment above it.
fn documented() -> Vec<(Vec<String>, Vec<Setting>)> {
    let mut groups: Vec<(Vec<String>, Vec<Setting>)> = Vec::new();
    let mut section = String::new();
    let mut comment: Vec<String> = Vec::new();
    let mut open = false;
    for line in DEFAULTS.lines() {
        let line = line.trim();
        if line.is_empty() {
            comment.clear();
            open = false;
        } else if let Some(text) = line.strip_prefix('#') {
            comment.push(text.strip_prefix(' ').unwrap_or(text).to_owned());
            open = false;
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_owned();
            comment.clear();
            open = false;
        } else if let Some((key, value)) = line.split_once('=') {
            let path = if section.is_empty() {
                key.trim().to_owned()
            } else {
                format!("{section}.{}", key.trim())
            };
            let setting = Setting {
                path,
                default: value.trim().to_owned(),
            };
            match groups.last_mut() {
                // Keys right under one comment share it.
                Some((_, settings)) if open => settings.push(setting),
                _ => groups.push((std::mem::take(&mut comment), vec![setting])),
            }
            open = true;
        }
    }
    groups
}

/// The text `--help` ends with.
pub fn settings_help() -> String {
    let mut out = String::from(
        "Settings:\n  Each setting is a key of the TOML file named by --config (sections in \
         brackets, as\n  [limits]) and an environment variable, which wins over the file. The \
         value shown is\n  the default. An unknown key or CHAT_GATEWAY_* variable stops the \
         start.\n",
    );
    for (comment, settings) in documented() {
        out.push('\n');
        for s in &settings {
            out.push_str(&format!(
                "  {} = {}\n      env: {}\n",
                s.path,
                s.default,
                env_name(&s.path)
            ));
        }
        for line in comment {
            out.push_str(&format!("      {line}\n"));
        }
    }
    out.push_str(
        "\nOther environment variables:\n  CHAT_GATEWAY_CONFIG   the TOML file to read (as \
         --config)\n  RUST_LOG              a tracing filter that wins over `log`\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keys::Keys;

    #[test]
    fn the_help_lists_every_setting_with_its_variable_and_default() {
        let help = settings_help();
        for key in Keys::known().settings() {
            assert!(help.contains(&format!("  {key} = ")), "{key} missing");
            assert!(help.contains(&env_name(key)), "{key}: no variable");
        }
        assert!(
            help.contains("  limits.max_connections = 19500\n"),
            "{help}"
        );
        assert!(help.contains("CHAT_GATEWAY_STORE__POSTGRES_URL"), "{help}");
        assert!(
            help.contains("      Address of the public listener"),
            "{help}"
        );
    }
}

//! Users from the `[users]` table and from an htpasswd-style users file
//! (`name:$argon2id$...` lines, `#` comments and blank lines allowed).

use std::collections::BTreeMap;
use std::path::Path;

use super::ConfigError;
use crate::credentials::{UserHash, parse_user_hash};

/// A username that can be sent in a Basic header and logged safely:
/// non-empty, no colon (it would end the user-id), no control characters,
/// no leading or trailing whitespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Checks and wraps a username; the error says what is wrong.
    pub fn parse(name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err("username is empty".into());
        }
        if name.contains(':') {
            return Err(format!(
                "username {name:?} contains a colon, which Basic auth cannot carry"
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(format!("username {name:?} contains a control character"));
        }
        if name.trim() != name {
            // `alice ` could never be typed by mistake and logged in with
            // `alice`: refuse it rather than keep a user nobody can reach.
            return Err(format!("username {name:?} starts or ends with whitespace"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Checks a username (see [`Username::parse`]).
pub fn validate_username(name: &str) -> Result<(), String> {
    Username::parse(name).map(|_| ())
}

pub(super) fn from_table(
    path: &Path,
    table: BTreeMap<String, String>,
) -> Result<Vec<(String, UserHash)>, ConfigError> {
    table
        .into_iter()
        .map(|(name, hash)| {
            let key = format!("[users] {name:?}");
            let name = Username::parse(&name)
                .map_err(|m| ConfigError::invalid(path, &key, m))?
                .into_string();
            let hash = parse_user_hash(&hash)
                .map_err(|e| ConfigError::invalid(path, &key, e.to_string()))?;
            Ok((name, hash))
        })
        .collect()
}

/// Adds the users listed in `file` to `users`, refusing duplicates within the
/// file and with the config's `[users]` table.
pub(crate) fn add_from_file(
    file: &Path,
    users: &mut Vec<(String, UserHash)>,
    config: &Path,
) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        ConfigError::invalid(
            config,
            "[auth] users_file",
            format!("cannot read {}: {e}", file.display()),
        )
    })?;
    // Where each name was first defined: `None` for the config's [users]
    // table, `Some(line)` for this file. A map, so that a large file loads
    // in linear time (a scan per line made 100,000 users take 30 s).
    let mut seen: std::collections::HashMap<String, Option<usize>> =
        users.iter().map(|(n, _)| (n.clone(), None)).collect();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("line {}", index + 1);
        let Some((name, hash)) = line.split_once(':') else {
            return Err(ConfigError::invalid(
                file,
                at,
                "expected `username:$argon2id$...`",
            ));
        };
        let key = format!("{at}, user {name:?}");
        let name = Username::parse(name)
            .map_err(|m| ConfigError::invalid(file, &key, m))?
            .into_string();
        if let Some(first) = seen.get(&name) {
            let first = match first {
                None => format!("[users] in {}", config.display()),
                Some(line) => format!("line {line}"),
            };
            return Err(ConfigError::invalid(
                file,
                &key,
                format!("duplicate user: already defined in {first}"),
            ));
        }
        let hash =
            parse_user_hash(hash).map_err(|e| ConfigError::invalid(file, &key, e.to_string()))?;
        seen.insert(name.clone(), Some(index + 1));
        users.push((name, hash));
    }
    Ok(())
}

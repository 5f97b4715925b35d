//! The shipped `config/gatehouse.toml` documents every key the config
//! accepts, as the README says: the accepted keys are read from the
//! parser's own "unknown field" errors, so a new key cannot be added
//! without documenting it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use gatehouse::config::Config;

/// The names serde lists in "unknown field `x`, expected one of `a`, `b`"
/// (or "expected `a` or `b`") for `toml`.
fn accepted(toml: &str) -> BTreeSet<String> {
    let Err(error) = Config::from_toml(Path::new("probe.toml"), toml) else {
        panic!("an unknown key is an error");
    };
    let error = error.to_string();
    let expected = error
        .split_once("expected ")
        .unwrap_or_else(|| panic!("no list of keys in: {error}"))
        .1;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Section → keys mentioned in the shipped file, set or commented out
/// (`key = …` or `# key = …`, under `[section]` or `# [section]`).
fn documented(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut sections: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim_start_matches('#').trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
            sections.entry(current.clone()).or_default();
        } else if let Some((key, _)) = line.split_once('=') {
            let key = key.trim();
            if !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                sections
                    .entry(current.clone())
                    .or_default()
                    .insert(key.to_owned());
            }
        }
    }
    sections
}

#[test]
fn the_shipped_config_documents_every_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("config/gatehouse.toml")).unwrap();
    let documented = documented(&shipped);
    let sections = accepted("zz_not_a_key = 1\n");
    assert!(sections.contains("server") && sections.contains("upstream"));
    let mut missing = Vec::new();
    for section in &sections {
        if section == "users" {
            continue; // user names, not keys
        }
        let keys = accepted(&format!("[{section}]\nzz_not_a_key = 1\n"));
        for key in keys {
            if !documented.get(section).is_some_and(|d| d.contains(&key)) {
                missing.push(format!("[{section}] {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "config/gatehouse.toml does not mention: {}",
        missing.join(", ")
    );
}

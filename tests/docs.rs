//! The operator's first hour: what the README and the docs promise is
//! what the binary and the repository hold.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_portsyncd");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The README's usage block names every flag `portsyncd --help` lists, and
/// check-config.
#[test]
fn the_readme_usage_lists_every_flag_and_check_config() {
    let readme = read("README.md");
    let usage: String = readme
        .split("\n## Usage\n")
        .nth(1)
        .expect("README has a Usage section")
        .lines()
        .skip_while(|l| !l.starts_with("    "))
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let flags: Vec<&str> = help
        .lines()
        .filter_map(|l| l.trim().strip_prefix("--"))
        .map(|l| l.split([' ', '=', ',']).next().unwrap())
        .collect();
    assert!(flags.len() > 25, "{help}");
    for flag in flags {
        assert!(
            usage.contains(&format!("--{flag}")),
            "README's usage lacks --{flag}:\n{usage}"
        );
    }
    assert!(usage.contains("portsyncd check-config"), "{usage}");
}

/// The README says what running its two commands takes and changes.
#[test]
fn the_readme_says_what_the_two_commands_need_and_change() {
    let readme = read("README.md");
    for fact in [
        "Rust 1.88",
        "root",
        "Debian 12",
        "4 minutes",
        "10 minutes",
        "360 MB",
        "port 80",
    ] {
        assert!(readme.contains(fact), "README does not say {fact:?}");
    }
    let cargo = read("Cargo.toml");
    assert!(
        cargo.contains("rust-version = \"1.88\""),
        "the README's Rust version is Cargo.toml's"
    );
}

/// The repository stands alone: no document links outside it.
#[test]
fn no_document_points_outside_the_repository() {
    let mut docs = vec![
        "README.md".to_string(),
        "certs-example/README.md".to_string(),
    ];
    for entry in std::fs::read_dir(Path::new(ROOT).join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            docs.push(format!("docs/{name}"));
        }
    }
    for doc in docs {
        let text = read(&doc);
        for (n, line) in text.lines().enumerate() {
            assert!(
                !line.contains("../shared") && !line.contains("shared/docs"),
                "{doc}:{}: points outside the repository: {line}",
                n + 1
            );
        }
    }
}

/// The least-privilege user is documented where an operator looks.
#[test]
fn the_acl_user_is_documented_for_the_switch() {
    for doc in ["docs/security.md", "docs/sonic-integration.md"] {
        let text = read(doc);
        for fact in [
            "docs/examples/redis-acl.conf",
            "--redis-password-file",
            "SHA256_OF_THE_PASSWORD",
        ] {
            assert!(text.contains(fact), "{doc} lacks {fact}");
        }
    }
}

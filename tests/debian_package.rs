//! The Debian package as an operator gets it: built by `scripts/package.sh`
//! (cargo-deb, release build), checked by lintian, its file list and control
//! fields compared with what it must hold, and its unit, binary, example
//! configuration, man page and completion run exactly as extracted.
//!
//! Each test builds the package into its own directory; the script
//! serialises the builds, and after the first (scripts/test.sh makes it
//! before the tests) each is a few seconds of packing.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use tempfile::TempDir;

mod common;
use common::run;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A freshly built package in a temporary directory.
struct Package {
    dir: TempDir,
    deb: PathBuf,
}

impl Package {
    fn build() -> Package {
        let dir = tempfile::Builder::new()
            .prefix("psd-deb-")
            .tempdir()
            .unwrap();
        let deb = dir.path().join("portsyncd.deb");
        run(Command::new("bash")
            .arg(Path::new(REPO).join("scripts/package.sh"))
            .arg("--output")
            .arg(&deb));
        assert!(
            deb.is_file(),
            "scripts/package.sh made no {}",
            deb.display()
        );
        Package { dir, deb }
    }

    /// `dpkg-deb -x` into `root/`; returns that directory.
    fn extract(&self) -> PathBuf {
        let root = self.dir.path().join("root");
        run(Command::new("dpkg-deb").arg("-x").arg(&self.deb).arg(&root));
        root
    }

    /// `dpkg-deb -f`: one control field.
    fn field(&self, name: &str) -> String {
        let out = run(Command::new("dpkg-deb").arg("-f").arg(&self.deb).arg(name));
        text(&out.stdout).trim().to_string()
    }
}

/// Regular files of the package: path (without the leading `.`) -> mode,
/// as `dpkg-deb -c` lists them (owner root:root checked on the way).
fn listed_files(deb: &Path) -> BTreeMap<String, String> {
    let out = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    let mut files = BTreeMap::new();
    for line in text(&out.stdout).lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(cols.len() >= 6, "unexpected dpkg-deb -c line: {line}");
        assert_eq!(cols[1], "0/0", "not owned by root: {line}");
        let (mode, path) = (cols[0], cols[5].trim_start_matches('.'));
        assert!(
            mode.starts_with('-') || mode.starts_with('d'),
            "only files and directories belong in the package: {line}"
        );
        if mode.starts_with('-') {
            files.insert(path.to_string(), mode.to_string());
        }
    }
    files
}

/// Every file the package must hold, with its mode: the fixed ones, and
/// each document and example of the repository.
fn expected_files() -> BTreeMap<String, String> {
    let exec = "-rwxr-xr-x";
    let plain = "-rw-r--r--";
    let mut files: BTreeMap<String, String> = [
        ("/usr/bin/portsyncd", exec),
        ("/usr/share/portsyncd/gen-certs.sh", exec),
        ("/lib/systemd/system/portsyncd.service", plain),
        ("/usr/lib/sysusers.d/portsyncd.conf", plain),
        ("/etc/portsyncd/portsyncd.toml", plain),
        ("/usr/share/man/man8/portsyncd.8.gz", plain),
        ("/usr/share/bash-completion/completions/portsyncd", plain),
        ("/usr/share/zsh/vendor-completions/_portsyncd", plain),
        ("/usr/share/fish/vendor_completions.d/portsyncd.fish", plain),
        ("/usr/share/doc/portsyncd/copyright", plain),
        ("/usr/share/doc/portsyncd/changelog.Debian.gz", plain),
        ("/usr/share/doc/portsyncd/README.md", plain),
        ("/usr/share/doc/portsyncd/certificates.md", plain),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_string(), m.to_string()))
    .collect();
    let docs = Path::new(REPO).join("docs");
    for (dir, suffix, dest) in [
        ("", ".md", ""),
        ("img", ".svg", "img/"),
        ("examples", "", "examples/"),
    ] {
        for entry in fs::read_dir(docs.join(dir)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if entry.file_type().unwrap().is_file() && name.ends_with(suffix) {
                files.insert(
                    format!("/usr/share/doc/portsyncd/{dest}{name}"),
                    plain.to_string(),
                );
            }
        }
    }
    files
}

#[test]
fn lintian_finds_no_error_and_no_unexpected_warning() {
    let package = Package::build();
    let out = Command::new("lintian")
        .args(["--pedantic", "--display-info"])
        .arg(&package.deb)
        .output()
        .expect("lintian (apt-get install lintian, or run scripts/test.sh)");
    let report = text(&out.stdout);
    // Only about uploads to Debian's archive (which closes an ITP bug).
    let allowed_warnings = ["initial-upload-closes-no-bugs"];
    let problems: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .filter(|l| !allowed_warnings.iter().any(|w| l.contains(w)))
        .collect();
    assert!(
        problems.is_empty(),
        "lintian:\n{report}{}",
        text(&out.stderr)
    );
    // Exit 0 (lintian exits 1 on an error tag, 2 when it could not run).
    assert!(out.status.success(), "lintian failed: {out:?}");
}

#[test]
fn package_holds_exactly_the_listed_files_and_no_maintainer_script() {
    let package = Package::build();
    let listed = listed_files(&package.deb);
    let expected = expected_files();
    let missing: Vec<_> = expected
        .keys()
        .filter(|p| !listed.contains_key(*p))
        .collect();
    let extra: Vec<_> = listed
        .keys()
        .filter(|p| !expected.contains_key(*p))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing: {missing:?}\nnot expected: {extra:?}"
    );
    for (path, mode) in &expected {
        assert_eq!(&listed[path], mode, "mode of {path}");
    }

    // Control: the example configuration is a conffile; nothing runs at
    // install or removal; the daemon needs the C library and nothing else.
    let control = package.dir.path().join("control");
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&package.deb)
        .arg(&control));
    let mut members: Vec<String> = fs::read_dir(&control)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    members.sort();
    assert_eq!(members, ["conffiles", "control"], "control archive");
    assert_eq!(
        fs::read_to_string(control.join("conffiles"))
            .unwrap()
            .trim(),
        "/etc/portsyncd/portsyncd.toml"
    );
    assert_eq!(package.field("Package"), "portsyncd");
    assert_eq!(
        package.field("Version"),
        format!("{}-1", env!("CARGO_PKG_VERSION"))
    );
    let depends = package.field("Depends");
    assert!(
        depends.starts_with("libc6 (>= ") && !depends.contains(','),
        "Depends: {depends}"
    );
}

#[test]
fn extracted_unit_passes_systemd_analyze_verify() {
    let package = Package::build();
    let root = package.extract();
    let unit = fs::read_to_string(root.join("lib/systemd/system/portsyncd.service")).unwrap();
    // The commands it runs are where the package puts them...
    let binary = root.join("usr/bin/portsyncd");
    for line in unit.lines().filter(|l| l.starts_with("Exec")) {
        let command = line.split_once('=').unwrap().1.split_whitespace().next();
        if command == Some("/usr/bin/portsyncd") {
            assert!(binary.is_file(), "{line}: not in the package");
        }
    }
    assert!(unit.contains("ExecStart=/usr/bin/portsyncd --config /etc/portsyncd/portsyncd.toml"));
    assert!(root.join("etc/portsyncd/portsyncd.toml").is_file());
    // ...and, pointed at the extracted binary (verify checks that the
    // executable exists on this machine), the unit verifies clean.
    let dir = package.dir.path().join("unit");
    fs::create_dir(&dir).unwrap();
    let path = dir.join("portsyncd.service");
    fs::write(
        &path,
        unit.replace("/usr/bin/portsyncd", binary.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify:\n{report}");
    assert!(
        !report.contains("portsyncd.service:"),
        "systemd-analyze verify complained:\n{report}"
    );
}

#[test]
fn extracted_binary_reports_its_version_and_checks_the_extracted_example() {
    let package = Package::build();
    let root = package.extract();
    let binary = root.join("usr/bin/portsyncd");
    let out = run(Command::new(&binary).arg("--version"));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("portsyncd {}", env!("CARGO_PKG_VERSION"))
    );

    // The packaged certificate script makes the set the unit's variables
    // point at; a database config stands in for SONiC's.
    let certs = package.dir.path().join("certs");
    run(Command::new(root.join("usr/share/portsyncd/gen-certs.sh")).arg(&certs));
    let db = package.dir.path().join("database_config.json");
    let layout = serde_json::json!({
        "INSTANCES": {"redis": {"hostname": "127.0.0.1", "port": 6379,
                                "unix_socket_path": "/run/redis/redis.sock"}},
        "DATABASES": {
            "APPL_DB": {"id": 0, "separator": ":", "instance": "redis"},
            "CONFIG_DB": {"id": 4, "separator": "|", "instance": "redis"},
            "STATE_DB": {"id": 6, "separator": "|", "instance": "redis"}
        },
        "VERSION": "1.0"
    });
    fs::write(&db, layout.to_string()).unwrap();
    let example = root.join("etc/portsyncd/portsyncd.toml");
    let out = run(Command::new(&binary)
        .args(["check-config", "--config"])
        .arg(&example)
        .arg("--db-config")
        .arg(&db)
        .env_remove("NAMESPACE_ID")
        .env("PORTSYNCD_METRICS_CERT", certs.join("server.crt"))
        .env("PORTSYNCD_METRICS_KEY", certs.join("server.key"))
        .env("PORTSYNCD_METRICS_CA", certs.join("ca.crt")));
    let summary = text(&out.stdout);
    assert!(summary.contains("check-config: OK"), "{summary}");
    assert!(
        summary.contains(&format!("config file: {}", example.display())),
        "{summary}"
    );
    assert!(summary.contains("metrics endpoint: https://"), "{summary}");
}

#[test]
fn man_page_renders_cleanly_and_documents_every_flag() {
    let package = Package::build();
    let root = package.extract();
    let page = root.join("usr/share/man/man8/portsyncd.8.gz");
    let out = Command::new("man")
        .args(["--warnings", "--no-hyphenation", "--no-justification", "-l"])
        .arg(&page)
        .env("MANWIDTH", "80")
        .env_remove("MAN_KEEP_FORMATTING")
        .output()
        .expect("man (apt-get install man-db)");
    assert!(out.status.success(), "man -l: {out:?}");
    assert_eq!(text(&out.stderr), "", "groff warnings");
    let rendered = text(&out.stdout);
    for section in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "FILES",
        "SIGNALS",
        "EXIT STATUS",
        "VERSION",
    ] {
        assert!(
            rendered.lines().any(|l| l == section),
            "no {section} section:\n{rendered}"
        );
    }
    assert!(rendered.contains("portsyncd(8)"), "{rendered}");
    for fact in [
        "SIGHUP",
        "/etc/portsyncd/portsyncd.toml",
        "database_config.json",
        "mode 0700",
    ] {
        assert!(
            rendered.contains(fact),
            "the man page lacks {fact}:\n{rendered}"
        );
    }
    let cli = portsyncd::config::Cli::command();
    for arg in cli.get_arguments() {
        if let Some(long) = arg.get_long() {
            assert!(
                mentions_flag(&rendered, long),
                "the man page lacks --{long}:\n{rendered}"
            );
        }
    }
}

/// Whether `text` names the flag `--long` itself, not only a longer flag
/// that starts with it (`--metrics-max-unverified` is not documented by
/// `--metrics-max-unverified-per-source`).
fn mentions_flag(text: &str, long: &str) -> bool {
    let flag = format!("--{long}");
    let part_of_flag = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(&flag).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + flag.len()..].chars().next();
        !before.is_some_and(part_of_flag) && !after.is_some_and(part_of_flag)
    })
}

#[test]
fn a_flag_is_matched_whole() {
    let page = "  --metrics-max-unverified-per-source N\n  --queue-capacity=N\n";
    assert!(!mentions_flag(page, "metrics-max-unverified"));
    assert!(!mentions_flag(page, "metrics-max"));
    assert!(!mentions_flag(page, "source"));
    assert!(mentions_flag(page, "metrics-max-unverified-per-source"));
    assert!(mentions_flag(page, "queue-capacity"));
    assert!(mentions_flag("--db-config", "db-config"));
}

#[test]
fn bash_completion_completes_the_daemons_flags() {
    let package = Package::build();
    let root = package.extract();
    for file in [
        "usr/share/zsh/vendor-completions/_portsyncd",
        "usr/share/fish/vendor_completions.d/portsyncd.fish",
    ] {
        let script = fs::read_to_string(root.join(file)).unwrap();
        assert!(script.contains("metrics-listen"), "{file}:\n{script}");
    }
    let bash = root.join("usr/share/bash-completion/completions/portsyncd");
    assert_eq!(
        fs::metadata(&bash).unwrap().permissions().mode() & 0o777,
        0o644
    );
    // What bash does on `portsyncd --metrics-l<TAB>`.
    let script = format!(
        "source {}\n\
         complete -p portsyncd\n\
         COMP_WORDS=(portsyncd --metrics-l); COMP_CWORD=1; COMP_LINE='portsyncd --metrics-l'; COMP_POINT=${{#COMP_LINE}}\n\
         _portsyncd portsyncd --metrics-l portsyncd\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        bash.display()
    );
    let out = run(Command::new("bash").arg("-c").arg(script));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("-F _portsyncd portsyncd") && shown.lines().any(|l| l == "--metrics-listen"),
        "{shown}"
    );
}

/// `dpkg --root` into an empty private root: install, reinstall over an
/// edited configuration (kept: it is a conffile), remove (configuration
/// left), purge (nothing left). No maintainer script runs at any step.
#[test]
fn package_installs_keeps_edited_config_and_purges_in_a_private_root() {
    let package = Package::build();
    let root = package.dir.path().join("dpkg-root");
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    // The private root has no libc6 package to satisfy Depends.
    let dpkg = |args: &[&str]| {
        let mut cmd = Command::new("dpkg");
        cmd.arg(format!("--root={}", root.display()))
            .arg("--force-depends")
            .args(args);
        text(&run(&mut cmd).stdout)
    };
    let deb = package.deb.to_str().unwrap();
    dpkg(&["-i", deb]);
    let status = dpkg(&["-s", "portsyncd"]);
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(root.join("usr/bin/portsyncd").is_file());

    let config = root.join("etc/portsyncd/portsyncd.toml");
    let edited = format!(
        "{}queue_capacity = 1024\n",
        fs::read_to_string(&config).unwrap()
    );
    fs::write(&config, &edited).unwrap();
    dpkg(&["-i", deb]);
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        edited,
        "reinstall replaced the edit"
    );

    dpkg(&["-r", "portsyncd"]);
    assert!(!root.join("usr/bin/portsyncd").exists());
    assert!(config.is_file(), "remove must keep the configuration");
    dpkg(&["-P", "portsyncd"]);
    assert!(
        !root.join("etc/portsyncd").exists(),
        "purge left /etc/portsyncd"
    );
    let info: Vec<_> = fs::read_dir(root.join("var/lib/dpkg/info"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("portsyncd."))
        .collect();
    assert!(info.is_empty(), "dpkg still has {info:?}");
}

//! certs-example/README.md's install procedure, run as written (only `DIR`
//! filled in), then the unit's pre-start check as the unit's user: the
//! files it installs are the ones the shipped unit (`User=portsyncd`) can
//! use.
//!
//! Everything happens in a mount namespace of its own, on a private copy of
//! /etc (where the shipped sysusers file creates the `portsyncd` user) and
//! a private /run and /usr/local/bin: the host is left as it was.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_portsyncd");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The command lines of the README's "## Install" section.
fn install_procedure() -> Vec<String> {
    let readme = std::fs::read_to_string(format!("{ROOT}/certs-example/README.md")).unwrap();
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Install\n"))
        .expect("certs-example/README.md has an Install section");
    // The section's first code block.
    section
        .lines()
        .skip_while(|l| !l.starts_with("    "))
        .map_while(|l| l.strip_prefix("    "))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_certificate_install_procedure_works_as_written_for_the_unit() {
    assert!(
        is_root(),
        "run as root (scripts/test.sh does): the test needs a mount namespace"
    );
    let procedure = install_procedure();
    assert!(
        procedure.iter().any(|l| l.contains("check-config")),
        "the procedure ends with the unit's check: {procedure:?}"
    );
    let work = tempfile::tempdir().unwrap();
    let certs = work.path().join("certs");
    let steps: Vec<String> = procedure
        .iter()
        .map(|l| l.replace("DIR/", &format!("{}/", certs.display())))
        .collect();
    let script = format!(
        r#"set -euo pipefail
work={work}
# A private /etc (a copy), /run and /usr/local/bin for this namespace only.
cp -a /etc "$work/etc" && mount --bind "$work/etc" /etc
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /usr/local/bin
install -m 0755 {bin} /usr/local/bin/portsyncd
# As docs/operations.md installs the daemon's user and configuration.
systemd-sysusers {root}/systemd/portsyncd.sysusers
install -d -m 0750 -g portsyncd /etc/portsyncd
install -m 0640 -g portsyncd {root}/systemd/portsyncd.toml /etc/portsyncd/portsyncd.toml
mkdir -p /run/redis/sonic-db
cat > /run/redis/sonic-db/database_config.json <<'JSON'
{{"INSTANCES": {{"redis": {{"hostname": "127.0.0.1", "port": 6379, "unix_socket_path": "/run/redis/redis.sock"}}}},
 "DATABASES": {{"APPL_DB": {{"id": 0, "separator": ":", "instance": "redis"}},
   "CONFIG_DB": {{"id": 4, "separator": "|", "instance": "redis"}},
   "STATE_DB": {{"id": 6, "separator": "|", "instance": "redis"}}}}, "VERSION": "1.0"}}
JSON
chmod -R a+rX /run/redis
bash {root}/certs-example/gen-certs.sh {certs} >/dev/null
# certs-example/README.md, as written:
{steps}
"#,
        work = work.path().display(),
        bin = BIN,
        root = ROOT,
        certs = certs.display(),
        steps = steps.join("\n"),
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-c", &script])
        .output()
        .expect("unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the procedure failed:\n{stdout}\n{stderr}\nscript:\n{script}"
    );
    assert!(stdout.contains("check-config: OK"), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("metrics endpoint: https://[::1]:7493"),
        "{stdout}"
    );
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

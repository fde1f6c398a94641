//! `kubectl dbu` through the real kubectl plugin mechanism: found on PATH, handed its arguments
//! and environment; help, usage errors, kubeconfig and context choice, and completion without a
//! cluster (the e2e drives it against one).

use std::path::Path;
use std::process::{Command, Output};

/// kubectl (from scripts/install-tools.sh) with a PATH whose first folder holds kubectl-dbu only.
fn kubectl(args: &[&str], kubeconfig: &Path) -> Output {
    let plugin = Path::new(env!("CARGO_BIN_EXE_kubectl-dbu"));
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(plugin, dir.path().join("kubectl-dbu")).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("kubectl")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("kubectl is on PATH (scripts/install-tools.sh)");
    drop(dir);
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A kubeconfig of two contexts whose servers nothing listens at (127.0.0.1 ports 9 and 7,
/// refused at once); the current one has namespace mail.
fn kubeconfig(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("config");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\n\
         clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}, {name: d, cluster: {server: 'https://127.0.0.1:7'}}]\n\
         users: [{name: u, user: {token: secret-token}}]\n\
         contexts: [{name: x, context: {cluster: c, user: u, namespace: mail}}, {name: y, context: {cluster: d, user: u}}]\n\
         current-context: x\n",
    )
    .unwrap();
    path
}

#[test]
fn kubectl_finds_the_plugin_and_passes_it_arguments_and_environment() {
    let home = tempfile::tempdir().unwrap();
    let kc = kubeconfig(home.path());
    let list = kubectl(&["plugin", "list"], &kc);
    assert!(
        text(&list.stdout).contains("kubectl-dbu"),
        "{}{}",
        text(&list.stdout),
        text(&list.stderr)
    );
    let help = kubectl(&["dbu", "--help"], &kc);
    assert!(help.status.success(), "{}", text(&help.stderr));
    for verb in [
        "list",
        "status",
        "plan",
        "pause",
        "resume",
        "abort",
        "approve",
        "retry",
        "skip",
        "hold",
        "release",
        "rings",
        "ring",
        "ring-release",
        "completion",
    ] {
        assert!(
            text(&help.stdout).contains(&format!("\n  {verb} ")),
            "{verb} missing from --help"
        );
        let one = kubectl(&["dbu", verb, "--help"], &kc);
        assert!(one.status.success(), "{verb} --help: {}", text(&one.stderr));
        assert!(
            text(&one.stdout).contains(&format!("Usage: kubectl dbu {verb}")),
            "{}",
            text(&one.stdout)
        );
    }
    // usage errors: 1, as kubectl's own, with the usage line
    let usage = kubectl(&["dbu", "skip", "roll"], &kc);
    assert_eq!(usage.status.code(), Some(1), "{}", text(&usage.stderr));
    assert!(
        text(&usage.stderr).contains("<BACKEND>"),
        "{}",
        text(&usage.stderr)
    );
    let flag = kubectl(&["dbu", "status", "roll", "--bogus"], &kc);
    assert_eq!(flag.status.code(), Some(1));
    assert!(text(&flag.stderr).starts_with("error: unexpected argument '--bogus'"));
}

#[test]
fn kubeconfig_and_context_choose_the_server_and_no_secret_is_printed() {
    let home = tempfile::tempdir().unwrap();
    let kc = kubeconfig(home.path());
    // KUBECONFIG from kubectl's environment: the plugin tries that server, and fails as kubectl
    let down = kubectl(&["dbu", "status", "roll"], &kc);
    assert_eq!(down.status.code(), Some(1), "{}", text(&down.stdout));
    let err = text(&down.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("secret-token"), "{err}");
    // an unknown context is refused before anything is sent
    let none = kubectl(&["dbu", "list", "--context", "nope"], &kc);
    assert_eq!(none.status.code(), Some(1));
    assert!(
        text(&none.stderr).contains("nope"),
        "{}",
        text(&none.stderr)
    );
    // --kubeconfig wins over KUBECONFIG: a missing file is named
    let missing = kubectl(
        &[
            "dbu",
            "list",
            "-A",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ],
        &kc,
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("/nonexistent/kubeconfig"),
        "{}",
        text(&missing.stderr)
    );
    let other = kubectl(&["dbu", "rings", "--context", "y"], &kc);
    assert_eq!(other.status.code(), Some(1));
    assert!(!text(&other.stderr).contains("secret-token"));
}

#[test]
fn completion_scripts_for_each_shell() {
    let home = tempfile::tempdir().unwrap();
    let kc = kubeconfig(home.path());
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef kubectl-dbu"),
        ("fish", "complete -c kubectl-dbu"),
    ] {
        let out = kubectl(&["dbu", "completion", shell], &kc);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script:.300}");
        assert!(script.contains("ring-release"), "{shell}");
    }
    // bash parses its own script
    let out = kubectl(&["dbu", "completion", "bash"], &kc);
    let file = home.path().join("completion.bash");
    std::fs::write(&file, &out.stdout).unwrap();
    let bash = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(bash.status.success(), "{}", text(&bash.stderr));
}

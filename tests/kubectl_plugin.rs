//! `kubectl dbu` through the real kubectl plugin mechanism: found on PATH, handed its arguments
//! and environment; usage and errors without a cluster (the e2e drives it against one).

use std::path::Path;
use std::process::Command;

/// kubectl (from scripts/install-tools.sh) with a PATH whose first folder holds kubectl-dbu only.
fn kubectl(args: &[&str], kubeconfig: &Path) -> std::process::Output {
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

#[test]
fn kubectl_finds_the_plugin_and_passes_it_arguments_and_environment() {
    let home = tempfile::tempdir().unwrap();
    // a cluster nothing listens at: 127.0.0.1 port 9 (discard), refused at once
    let kubeconfig = home.path().join("config");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n\
         users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u, namespace: mail}}]\n\
         current-context: x\n",
    )
    .unwrap();
    let list = kubectl(&["plugin", "list"], &kubeconfig);
    assert!(
        text(&list.stdout).contains("kubectl-dbu"),
        "{}{}",
        text(&list.stdout),
        text(&list.stderr)
    );
    let help = kubectl(&["dbu", "--help"], &kubeconfig);
    assert!(help.status.success(), "{}", text(&help.stderr));
    for verb in [
        "status", "plan", "pause", "resume", "abort", "approve", "retry", "skip", "hold",
    ] {
        assert!(
            text(&help.stdout).contains(&format!("  {verb} NAME")),
            "{verb}"
        );
    }
    let usage = kubectl(&["dbu", "skip", "roll"], &kubeconfig);
    assert_eq!(usage.status.code(), Some(2), "{}", text(&usage.stderr));
    assert!(text(&usage.stderr).contains("name the backend pod"));
    // the kubeconfig comes through kubectl's environment: the plugin tries that server
    let down = kubectl(&["dbu", "status", "roll"], &kubeconfig);
    assert_eq!(down.status.code(), Some(1), "{}", text(&down.stdout));
    let err = text(&down.stderr);
    assert!(err.starts_with("kubectl dbu: "), "{err}");
    assert!(!err.contains("token: t") && !err.contains(" t\n"), "{err}");
}

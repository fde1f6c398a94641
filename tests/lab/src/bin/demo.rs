//! The local demo: upgrades a real Dovecot director and backends through the operator's engine,
//! printing progress as `kubectl get dbu -w` would. Needs root (mount namespaces).

use std::time::{Duration, Instant};

use clap::Parser;
use dbu_lab::{ImapSession, Lab, LabSpec};
use dovecot_upgrade_operator::api::DovecotBackendUpgradeStatus;
use dovecot_upgrade_operator::engine;

#[derive(Parser)]
#[command(
    about = "Upgrades a real local Dovecot director and backends through the operator's engine"
)]
struct Cli {
    /// Number of backends.
    #[arg(long, default_value_t = 3)]
    backends: usize,
    /// Third octet of the loopback addresses used (127.0.N.x).
    #[arg(long, default_value_t = 77)]
    net: u8,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    demo(cli.backends, cli.net).await
}

/// One `kubectl get dbu` row.
fn row(st: &DovecotBackendUpgradeStatus, age: Duration) -> String {
    format!(
        "{:<6} {:<12} {:<9} {:<11} {:<13} {}s",
        "demo",
        st.phase.map(|p| format!("{p:?}")).unwrap_or_default(),
        st.progress.clone().unwrap_or_default(),
        st.current.clone().unwrap_or_default(),
        st.step.map(|s| s.to_string()).unwrap_or_default(),
        age.as_secs()
    )
}

fn print_ring(lab: &Lab) -> Result<(), String> {
    for h in lab.ring()? {
        let state = if h.up { "up" } else { "down" };
        println!(
            "  {:<14} vhosts={:<4} {state} users={}",
            h.ip, h.vhosts, h.users
        );
    }
    Ok(())
}

async fn demo(backends: usize, net: u8) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::Builder::new().prefix("dbu-demo-").tempdir()?;
    let vhosts: Vec<u32> = (0..backends).map(|i| [100, 50, 20][i % 3]).collect();
    println!("starting a real Dovecot director and {backends} backends on 127.0.{net}.0/24 ...");
    let lab = Lab::start(LabSpec::new(dir.path(), net, vhosts))?;
    let dip = lab.spec.director_ip();
    for u in 1..=6 {
        dbu_lab::lmtp_deliver(&dip, &format!("user{u}"), &format!("demo-{u}"))
            .map_err(|e| format!("LMTP: {e}"))?;
        ImapSession::login(&dip, &format!("user{u}"))?.logout();
    }
    println!("ring before:");
    print_ring(&lab)?;
    lab.new_revision("rev-2", "login_greeting = Dovecot rev-2 ready");
    println!("backend StatefulSet now at revision rev-2; applying the DovecotBackendUpgrade\n");
    // the verify user's password, as `kubectl create secret generic probe` would hold it
    lab.put_secret("probe", "password", dbu_lab::LAB_PASSWORD.as_bytes());
    let s = dbu_lab::settings(serde_json::json!({
        "drain": {"pollInterval": "1s", "timeout": "60s"},
        "timeouts": {"command": "40s", "replace": "60s"},
        // the lab speaks plain IMAP; the soak logs in through the director if no user comes
        "verify": {
            "imapProbe": {"credentialsSecret": {"name": "probe"}, "tls": {"mode": "None"}},
            "soak": {"enabled": true, "timeout": "30s"}
        }
    }));
    let exec = lab.exec();
    let started = Instant::now();
    println!(
        "{:<6} {:<12} {:<9} {:<11} {:<13} AGE",
        "NAME", "PHASE", "PROGRESS", "CURRENT", "STEP"
    );
    let mut last = String::new();
    let out = engine::drive(
        &s,
        DovecotBackendUpgradeStatus::default(),
        &exec,
        &lab,
        &dovecot_upgrade_operator::engine::NetProbes,
        &|| k8s_openapi::jiff::Timestamp::now(),
        Duration::from_secs(900),
        |o| {
            let r = row(&o.status, started.elapsed());
            let key = r
                .rsplit_once(' ')
                .map(|(k, _)| k.to_string())
                .unwrap_or_default();
            if key != last {
                println!("{r}");
                last = key;
            }
            for n in &o.notes {
                println!(
                    "    {} {}: {}",
                    if n.warning { "Warning" } else { "Normal " },
                    n.reason,
                    n.message
                );
            }
        },
    )
    .await?;
    println!("\nring after:");
    print_ring(&lab)?;
    let ready = out.status.conditions.iter().find(|c| c.type_ == "Ready");
    println!(
        "\nReady={} ({}) in {:.1}s",
        ready.map(|c| c.status.as_str()).unwrap_or("?"),
        ready.map(|c| c.message.as_str()).unwrap_or(""),
        started.elapsed().as_secs_f64()
    );
    if engine::stalled(&out.status) || ready.is_none_or(|c| c.status != "True") {
        return Err("the demo rollout did not complete".into());
    }
    Ok(())
}
